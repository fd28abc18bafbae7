"""``sweetspot analyze``: per-group sweet spots of a run (seed phase 2).

Also the seed's own form: ``python -m rayjobs.analyze_sweetspots --checkpoint-dir RUN --output DIR``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from analysis.errors import AnalysisError, AnalysisWarning
from analysis.pipeline import analyze_run
from analysis.report import write_outputs
from analysis.thresholds import load_thresholds
from modules.rundir import MANIFEST_NAME, RunDir
from modules.spec import Spec, load_spec
from rayjobs._entry import run_entry

DESCRIPTION = (
    "Recommend each module group's sweet-spot epoch with five techniques (plateau, task metrics,"
    " MCDA, gradient health, ensemble vote); write module_metrics.json, analysis_report.md,"
    " selection.json and visualizations/."
)
SEED_CHECKPOINT = re.compile(r"^checkpoint_epoch_(\d+)\.(pt|pth|safetensors)$")


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


def _open_run(source: Path, spec: Spec | None, spec_arg: str | None, scratch: Path) -> RunDir:
    """The run directory at ``source``, importing a checkpoint_epoch_<N>.pt folder on the fly."""
    if not source.is_dir():
        raise AnalysisError(f"--checkpoint-dir {source} is not a folder; pass a run directory or a checkpoint folder")
    if (source / MANIFEST_NAME).is_file():
        return RunDir(source)
    if not any(SEED_CHECKPOINT.match(p.name) for p in source.iterdir()):
        raise AnalysisError(
            f"--checkpoint-dir {source} has neither {MANIFEST_NAME} (a run directory) nor"
            " checkpoint_epoch_<N>.pt files; pass a recorded run or the folder of your checkpoints"
        )
    if spec is None:
        raise AnalysisError(
            f"--checkpoint-dir {source} holds checkpoint_epoch_<N>.pt files, which are imported on the fly;"
            " pass --spec sweetspot.yaml to say which parameters form which group"
        )
    from modules.importer import import_checkpoints

    print(f"importing {source} with spec {spec_arg} into a temporary run directory", file=sys.stderr)
    import_checkpoints(source, spec, scratch / "run", skip_bad=False, progress=True)
    return RunDir(scratch / "run")


def run(args: argparse.Namespace) -> int:
    """Analyse the run and write the results; errors are raised as SweetspotError."""
    source, output = Path(args.checkpoint_dir), Path(args.output)
    if source.is_dir() and _is_inside(output, source):
        raise AnalysisError(
            f"--output {output} is inside the run directory {source}; inputs are never modified, so"
            " choose an output folder outside it"
        )
    spec = load_spec(args.spec) if args.spec else None
    with tempfile.TemporaryDirectory(prefix="sweetspot-import-") as scratch:
        run_dir = _open_run(source, spec, args.spec, Path(scratch))
        thresholds = load_thresholds(args.thresholds, len(run_dir.epochs)) if args.thresholds else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AnalysisWarning)
            analysis = analyze_run(run_dir, spec, thresholds)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    analysis.source = str(source)
    written = write_outputs(analysis, output, plots=not args.no_plots)
    for group, result in analysis.groups.items():
        pick = result.pick if isinstance(result.pick, int) else f"average {result.pick[0]}-{result.pick[1]}"
        print(f"{group}: {pick} ({result.final.confidence:.0%})")
    for name, path in written.items():
        print(f"wrote {name}: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry("python -m rayjobs.analyze_sweetspots", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
