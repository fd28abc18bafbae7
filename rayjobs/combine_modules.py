"""``sweetspot combine``: build one model from a chosen epoch (or epoch average) per module group.

Two forms:

    sweetspot combine --checkpoint-dir RUN (--selection selection.json | --group backbone=44
        --group heads=40 --group analyzers=40-48) --output combined.safetensors [--update-bn]
    python -m rayjobs.combine_modules --spec sweetspot.yaml --backbone checkpoint_epoch_44.pt
        --heads checkpoint_epoch_40.pt [--default checkpoint_epoch_60.pt] --output combined_model.pt

Groups not named take the analysis's pick (``--analysis DIR``); without one, the error lists them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sweetspot
from rayjobs._entry import exit_process, run_entry
from rayjobs.options import (
    add_progress_flag,
    add_trust_flag,
    group_file_options,
    parse_group_option,
)

DESCRIPTION = "Combine module groups from different epochs (or epoch averages) into one model"
EPILOG = """examples:
  sweetspot combine --checkpoint-dir runs/demo --selection analysis/selection.json --output combined.safetensors
  sweetspot combine --checkpoint-dir runs/demo --group backbone=44 --group heads=40-48 \\
      --analysis analysis/ --output combined.safetensors --update-bn
  python -m rayjobs.combine_modules --spec sweetspot.yaml --backbone checkpoint_epoch_44.pt \\
      --heads checkpoint_epoch_40.pt --default checkpoint_epoch_60.pt --output combined_model.pt

GROUP=FIRST-LAST averages the group over the recorded epochs in the window. Groups not named take
the analysis's pick (--analysis DIR); without one, the error lists them. With --spec, --<group> FILE
is short for --group <group>=FILE (the seed's form over checkpoint_epoch_<N>.pt files).
--update-bn recomputes BatchNorm statistics only where they no longer fit: in averaged groups and
in groups fed by a group taken from another epoch."""

USAGE = """%(prog)s --checkpoint-dir RUN (--selection FILE | --group G=E ...) --output FILE [options]
       %(prog)s --spec YAML --<group> FILE ... [--default FILE] --output FILE [options]"""
#: combine's options: (flags, add_argument keywords).
ARGUMENTS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--checkpoint-dir",), dict(metavar="RUN", help="run directory, or a folder of checkpoint files (imported on the fly; then --spec);"
                                                                      " needed unless the checkpoint-file form (--<group> FILE) is used")),
    (("--selection",), dict(type=Path, metavar="FILE", help="selection.json: group -> epoch, {\"average\": [first, last]} or {\"epochs\": [...]}")),
    (("--group",), dict(
        action="append", default=[], metavar="G=E",
        help="GROUP=EPOCH, GROUP=FIRST-LAST (average) or GROUP=FILE (seed checkpoint); repeatable; overrides --selection",
    )),
    (("--output",), dict(type=Path, required=True, metavar="FILE", help="combined model file (.safetensors or .pt)")),
    (("--format",), dict(choices=["safetensors", "pt"], help="output format (default: from the suffix)")),
    (("--update-bn",), dict(action="store_true", help="recompute BatchNorm statistics on the train split (runs the spec's code; default: off)")),
    (("--spec",), dict(type=Path, metavar="YAML", help="your sweetspot.yaml (default: the run's stored spec for groups and couplings; its code runs only with --trust-run-spec)")),
    (("--analysis",), dict(type=Path, metavar="DIR", help="analysis folder: its picks fill groups not named (default: none; every group must be named)")),
    (("--default",), dict(type=Path, metavar="FILE", help="seed form: checkpoint for every group not named")),
]
OWN_OPTIONS = ("--help", "--trust-run-spec", "--no-progress", *(flag for flags, _ in ARGUMENTS for flag in flags))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = USAGE
    for flags, keywords in ARGUMENTS:
        parser.add_argument(*flags, **keywords)
    add_trust_flag(parser, "--update-bn")
    add_progress_flag(parser)


def translate_argv(argv: Sequence[str]) -> list[str]:
    """The seed's ``--<group> FILE`` (groups of the ``--spec``) as ``--group <group>=FILE``."""
    return group_file_options(argv, OWN_OPTIONS)


def run(args: argparse.Namespace) -> int:
    parsed = [parse_group_option(text) for text in args.group]
    files = {g: v for g, v in parsed if isinstance(v, Path)}
    epochs = {g: v for g, v in parsed if not isinstance(v, Path)}
    seed_form = bool(files) or args.default is not None
    if seed_form and (epochs or args.selection or args.checkpoint_dir):
        raise sweetspot.CombineError(
            "use either checkpoint files per group (--<group> FILE / --default FILE) or a run directory"
            " with epochs (--checkpoint-dir with --selection / --group G=EPOCH), not both"
        )
    if seed_form and args.spec is None:
        raise sweetspot.CombineError(
            "the checkpoint-file form (--<group> FILE / --default FILE) needs the spec's groups: pass"
            " --spec sweetspot.yaml first"
        )
    if not seed_form and args.checkpoint_dir is None:
        raise sweetspot.CombineError("pass --checkpoint-dir RUN with --selection/--group, or --spec with --<group> FILE options")
    selection: Any = args.selection
    if epochs:
        chosen = sweetspot.load_selection(args.selection).to_json() if args.selection else {}
        selection = {**chosen, **epochs}
    result = sweetspot.combine(
        args.checkpoint_dir, selection, args.output, files=files or None, default=args.default,
        analysis=args.analysis, spec=args.spec, update_bn=args.update_bn, fmt=args.format,
        progress=not args.no_progress, trust_run_spec=args.trust_run_spec,
    )
    print(f"wrote {args.output} ({result.plan.nbytes / 1e6:.1f} MB, {result.provenance['format']})")
    for group, choice in result.choices.items():
        print(f"  {group}: {choice}")
    if result.batchnorm_recomputed is not None:
        layers = result.batchnorm_recomputed
        print(f"BatchNorm statistics recomputed for {layers or 'no layer (no averaged or crossed group has one)'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry(
        "python -m rayjobs.combine_modules", DESCRIPTION, add_arguments, run, argv, EPILOG, translate_argv
    )


if __name__ == "__main__":
    exit_process(main())
