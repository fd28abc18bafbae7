"""``sweetspot analyze``: per-group sweet spots of a run (seed phase 2).

Also the seed's own form: ``python -m rayjobs.analyze_sweetspots --checkpoint-dir RUN --output DIR``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import sweetspot
from rayjobs._entry import exit_process, run_entry
from rayjobs.options import add_progress_flag

DESCRIPTION = (
    "Recommend each module group's sweet-spot epoch with five techniques (plateau, task metrics,"
    " MCDA, gradient health, ensemble vote); write module_metrics.json, analysis_report.md,"
    " selection.json and visualizations/."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sweetspot analyze``."""
    parser.add_argument(
        "--checkpoint-dir", required=True, help="run directory, or a folder of checkpoint_epoch_<N>.pt files"
    )
    parser.add_argument("--output", required=True, help="folder for the analysis results (created if needed)")
    parser.add_argument("--thresholds", help="thresholds.json (default: the documented defaults)")
    parser.add_argument(
        "--spec", help="your sweetspot.yaml (default: the copy stored in the run, read for groups and metrics only;"
        " required for a folder of checkpoint files)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip visualizations/ (default: draw them)")
    add_progress_flag(parser)


def run(args: argparse.Namespace) -> int:
    """Analyse the run and write the results; errors are raised as SweetspotError."""
    analysis = sweetspot.analyze(
        args.checkpoint_dir, spec=args.spec, thresholds=args.thresholds, output=args.output,
        plots=not args.no_plots, progress=not args.no_progress,
    )
    print("\n".join(analysis.pick_lines()))
    written = [p.name + ("/" if kind == "visualizations" else "") for kind, p in analysis.written.items()]
    print(f"wrote {', '.join(written)} into {args.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry("python -m rayjobs.analyze_sweetspots", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    exit_process(main())
