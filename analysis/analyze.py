"""``analyze``: each module group's sweet spot in a run, written only when an output is asked for."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from analysis.errors import AnalysisError
from analysis.pipeline import RunAnalysis, analyze_run
from analysis.report import write_outputs
from analysis.thresholds import Thresholds, load_thresholds
from modules.atomic import check_output_folder
from modules.importing.importer import open_run
from modules.rundir.run_dir import RunDir, RunLocation
from modules.rundir.run_spec import SpecLike, as_spec, check_spec_fits_run, run_or_folder
from modules.spec.schema import Spec


def analyze(
    run: RunDir | RunLocation,
    *,
    spec: SpecLike | None = None,
    thresholds: Thresholds | str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    plots: bool = True,
    progress: bool = False,
) -> RunAnalysis:
    """Recommend each group's sweet-spot epoch (or averaging window) of ``run``.

    ``run`` is a run directory (a local folder, or a URI such as ``s3://bucket/runs/a``), or a folder of ``checkpoint_epoch_<N>.pt`` files, imported into a
    temporary run on the fly (then ``spec`` is needed). ``spec`` defaults to the run's stored one,
    ``thresholds`` (an object or a thresholds.json path) to the documented defaults. With
    ``output``, module_metrics.json, analysis_report.md, selection.json and (with ``plots``)
    visualizations/ are written there. Skipped or approximated parts are issued as AnalysisWarning.
    """
    out = check_output_folder(output) if output is not None else None  # before any work
    spec_obj, spec_file = as_spec(spec) if spec is not None else (None, None)
    run = run_or_folder(run)
    source = run.local_path if isinstance(run, RunDir) else run
    if out is not None and source is not None and source.is_dir() and _is_inside(out, source):
        raise AnalysisError(
            f"{out} is inside the run directory {source}; inputs are never modified, so choose an output"
            " folder outside it",
            param="output",
        )
    if isinstance(run, RunDir):
        return _analyze(run, spec_obj, spec_file, thresholds, out, plots, run.label)
    with tempfile.TemporaryDirectory(prefix="sweetspot-import-") as scratch:
        run_dir = open_run(source, spec_obj, scratch, progress=progress)
        return _analyze(run_dir, spec_obj, spec_file, thresholds, out, plots, str(source))


def _analyze(
    run: RunDir,
    spec: object,
    spec_file: Path | None,
    thresholds: Thresholds | str | os.PathLike[str] | None,
    output: Path | None,
    plots: bool,
    source: str,
) -> RunAnalysis:
    if thresholds is not None and not isinstance(thresholds, Thresholds):
        thresholds = load_thresholds(thresholds, len(run.epochs))
    if isinstance(spec, Spec):
        check_spec_fits_run(spec, run, spec_file)
    # messages name the folder the user gave, not the temporary import of it
    analysis = analyze_run(run, spec, thresholds, source=source, spec_file=str(spec_file) if spec_file else None)
    if output is not None:
        analysis.written = write_outputs(analysis, output, plots=plots)
    return analysis


def _is_inside(path: Path, folder: Path) -> bool:
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents
