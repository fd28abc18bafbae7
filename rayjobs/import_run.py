"""``sweetspot import``: turn a folder of ``checkpoint_epoch_<N>.pt`` files into a run directory."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import sweetspot
from rayjobs._entry import exit_process, run_entry
from rayjobs.options import add_progress_flag

DESCRIPTION = (
    "Import a training run into a sweetspot run directory, without unpickling code: checkpoint_epoch_<N>.pt"
    " files, the Hugging Face Trainer's checkpoint-<step>/ folders, Lightning's epoch=<e>-step=<s>.ckpt,"
    " or torch.distributed.checkpoint folders (detected from the folder), with their metrics."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sweetspot import``."""
    parser.add_argument("--from", dest="source", required=True, help="the run's folder: checkpoint_epoch_<N>.pt files, a Trainer output_dir, a Lightning run, DCP folders")
    parser.add_argument("--spec", required=True, help="sweetspot.yaml naming the module groups")
    parser.add_argument("--out", required=True, help="new run directory to create (must not exist or be empty)")
    parser.add_argument(
        "--skip-bad", action="store_true", help="skip truncated or corrupt checkpoints and list them instead of failing (default: fail)"
    )
    add_progress_flag(parser, "--quiet")
    parser.add_argument("--pattern", action="append", help="checkpoint names: 'epoch_{epoch}.pt' or a regex with (?P<epoch>\\d+); repeatable"
                        " (default: checkpoint_epoch_<N>.pt/.pth/.safetensors and Lightning's epoch=<N>-step=<M>.ckpt)")
    parser.add_argument("--layout", choices=sweetspot.IMPORT_LAYOUTS, help="how --from is laid out (default: detected from the folder)")
    parser.add_argument("--strip-prefix", metavar="PREFIX", help="keep only keys starting with PREFIX, without it, e.g. 'model.' for a LightningModule's model attribute (default: keep all keys)")
    parser.add_argument("--allow-global", action="append", default=[], metavar="MODULE.NAME", help="load this type in checkpoint extras for real (trusted only; default: none, extras become inert placeholders)")


def run(args: argparse.Namespace) -> int:
    """Import and print a short summary; errors are raised as SweetspotError."""
    report = sweetspot.import_run(
        args.source, args.spec, args.out, skip_bad=args.skip_bad, progress=not args.no_progress,
        pattern=args.pattern, allow_globals=args.allow_global, layout=args.layout, strip_prefix=args.strip_prefix,
    )
    print(report.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry("sweetspot import", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    exit_process(main())
