"""``sweetspot train-demo``: train the embedded demo model and record it into a run directory."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import sweetspot
from rayjobs._entry import exit_process, run_entry

DESCRIPTION = (
    "Train the embedded multi-task demo model (8 module groups), saving every group's state and"
    " the metrics every --every epochs into --out, with the demo's sweetspot.yaml beside them."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="new or empty run directory, e.g. runs/demo")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the weights (default 0)")
    parser.add_argument(
        "--width", type=int, default=64,
        help="hidden-size scale: 64 ~0.3M parameters, 1280 ~112M, 2048 ~286M (default 64)",
    )
    parser.add_argument("--epochs", type=int, default=60, help="training epochs (default 60)")
    parser.add_argument("--every", type=int, default=2, help="save a checkpoint every k epochs (default 2)")
    parser.add_argument("--device", default="auto", help="torch device: auto (a GPU when available, else CPU), cpu, cuda or cuda:N (default auto)")
    parser.add_argument(
        "--reuse", action="store_true",
        help="keep a complete demo run of these settings already in --out; retrain one a kill left incomplete",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    out = sweetspot.train_demo(
        args.out, seed=args.seed, width=args.width, epochs=args.epochs, every=args.every,
        progress=not args.no_progress, device=args.device, reuse=args.reuse,
    )
    run_dir = sweetspot.RunDir(out)
    megabytes = sum(run_dir.group_nbytes(g) for g in run_dir.groups) / 1e6
    print(
        f"demo run of {args.epochs} epochs ({megabytes:.1f} MB per checkpoint);"
        f" recorded epochs {run_dir.epochs[0] if run_dir.epochs else '-'}..{run_dir.epochs[-1] if run_dir.epochs else '-'}"
        f" ({len(run_dir.epochs)} checkpoints, groups {', '.join(run_dir.groups)}) in {out}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry("sweetspot train-demo", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    exit_process(main())
