"""``sweetspot analyze``: per-group sweet spots of a run (seed phase 2).

Also the seed's own form: ``python -m rayjobs.analyze_sweetspots --checkpoint-dir RUN --output DIR``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from analysis.errors import AnalysisError, AnalysisWarning
from analysis.pipeline import analyze_run
from analysis.report import pick_summary, write_outputs
from analysis.thresholds import load_thresholds
from modules.atomic import check_output_folder
from modules.importer import open_run
from modules.spec import load_spec
from rayjobs._entry import run_entry

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
        "--spec", help="sweetspot.yaml (default: the copy stored in the run; required for checkpoint_epoch_<N>.pt folders)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip visualizations/")


def _is_inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def run(args: argparse.Namespace) -> int:
    """Analyse the run and write the results; errors are raised as SweetspotError."""
    output = check_output_folder(args.output)  # an existing file is refused before any work
    source = Path(args.checkpoint_dir)
    if source.is_dir() and _is_inside(output, source):
        raise AnalysisError(
            f"--output {output} is inside the run directory {source}; inputs are never modified, so"
            " choose an output folder outside it"
        )
    spec = load_spec(args.spec) if args.spec else None
    with tempfile.TemporaryDirectory(prefix="sweetspot-import-") as scratch:
        run_dir = open_run(source, spec, scratch)
        thresholds = load_thresholds(args.thresholds, len(run_dir.epochs)) if args.thresholds else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AnalysisWarning)
            # messages name the folder the user gave, not the temporary import of it
            analysis = analyze_run(run_dir, spec, thresholds, source=str(source), spec_file=args.spec)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    written = write_outputs(analysis, output, plots=not args.no_plots)
    for group, result in analysis.groups.items():
        print(pick_summary(group, result))
    for name, path in written.items():
        print(f"wrote {name}: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry("python -m rayjobs.analyze_sweetspots", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
