"""``evaluate``: a combination against single epochs, averages and soups of its run, on val and test.

Everything is chosen on the validation split and reported on the held-out test split; files are
written only when an output is asked for (``output=`` or ``Evaluation.write``).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisWarning
from analysis.evaluation.baselines import (
    DEFAULT_SINGLE_EPOCHS,
    AnalysisInfo,
    Candidate,
    analysis_for,
    is_average,
    read_analysis_dir,
)
from analysis.evaluation.evaluate import CandidateEvaluator, EvaluationResult, run_evaluation
from analysis.evaluation.report import headline, write_report
from analysis.pipeline import RunAnalysis
from modules.atomic import check_output_folder
from modules.combine.model_fit import (
    check_file_fits,
    check_run_fits,
    describe_spec_model,
    spec_model_layout,
)
from modules.combine.plan import resolve_selection, selection_epochs
from modules.combine.provenance import read_provenance
from modules.devices import resolve_device
from modules.errors import EvaluationError
from modules.importing.importer import open_run
from modules.rundir.run_dir import MANIFEST_NAME, RunDir
from modules.rundir.run_spec import (
    SpecLike,
    as_spec,
    check_spec_fits_run,
    run_or_folder,
    spec_for_run,
)
from modules.spec.selection import Selection, load_selection

#: What to do when the model file does not fit the spec's model.
MODEL_FIX = (
    "Pass the spec the run was recorded with (its model and model_args must build the model the file"
    " was combined for), or a model combined from this run"
)
#: What to do when the run's checkpoints do not fit the spec's model.
RUN_FIX = "Pass the spec the run was recorded with (its model and model_args must build the model the run trained)"
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


@dataclass
class Evaluation:
    """An evaluation's result, with what it was run on (stored in evaluation.json)."""

    result: EvaluationResult
    #: run_dir, spec, the analysis used and the combination's provenance or selection.
    context: dict[str, Any] = field(default_factory=dict)
    #: Files written by ``write`` (or ``output=``): json, report, plot.
    written: dict[str, Path] = field(default_factory=dict)

    def headline(self, markdown: bool = False) -> str:
        """The test winner, and the combination against the best baseline with its interval."""
        return headline(self.result, markdown=markdown)

    def write(self, folder: str | os.PathLike[str]) -> dict[str, Path]:
        """Write evaluation.json, evaluation_report.md and evaluation.png into ``folder``."""
        self.written = write_report(self.result, check_output_folder(folder), self.context)
        return self.written


def evaluate(
    run: RunDir | str | os.PathLike[str],
    combination: Selection | Mapping[str, Any] | str | os.PathLike[str],
    *,
    spec: SpecLike | None = None,
    analysis: RunAnalysis | str | os.PathLike[str] | None = None,
    baselines: Sequence[int] = DEFAULT_SINGLE_EPOCHS,
    update_bn: bool = False,
    resamples: int = 2000,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
    output: str | os.PathLike[str] | None = None,
    trust_run_spec: bool = False,
) -> Evaluation:
    """Evaluate ``combination`` against the baselines built from ``run``.

    ``run`` is a run directory, or a folder of ``checkpoint_epoch_<N>.pt`` files (imported into a
    temporary run on the fly; then ``spec`` is needed). ``combination`` is a combined model file
    (.safetensors / .pt), or a selection (group -> epoch or ``{"average": [first, last]}``, or a
    selection.json path) built on the fly; groups it does not name take the ``analysis``'s pick.
    ``analysis`` is what `analyze` returned or the folder it wrote (picks and plateau windows);
    without one it is computed from the run.
    ``baselines`` are the single epochs compared (the nearest recorded ones).
    Evaluating runs the spec's model, data and evaluate code: without ``spec`` the run's stored spec
    is used only with ``trust_run_spec`` (a run directory may come from elsewhere).
    """
    out = check_output_folder(output) if output is not None else None  # before any work
    run = run_or_folder(run)
    source = run.local_path if isinstance(run, RunDir) else run
    if out is not None and source is not None and (out.resolve() == source.resolve() or source.resolve() in out.resolve().parents):
        raise EvaluationError(f"{out} is inside the run directory {source}; write elsewhere", param="output")
    model, selection = _combination(combination)
    # Cheap checks first: nothing below this block takes long until the run is imported.
    info = _given_analysis(analysis)
    spec_obj, spec_file = as_spec(spec) if spec is not None else (None, None)
    stored_run = run if isinstance(run, RunDir) else None
    if spec_obj is None and stored_run is None and source is not None and (source / MANIFEST_NAME).is_file():
        stored_run = RunDir(source)
    if spec_obj is None and stored_run is not None:
        spec_obj, spec_file = spec_for_run(None, stored_run, trust_run_spec=trust_run_spec, purpose="evaluate")
    model_desc = describe_spec_model(spec_obj, spec_file) if spec_obj is not None else None
    layout = spec_model_layout(spec_obj) if spec_obj is not None else None
    if model is not None and layout is not None:
        check_file_fits(model, layout, model_desc or "the spec's model", MODEL_FIX)
    with tempfile.TemporaryDirectory(prefix="sweetspot-import-") as scratch:
        run_dir = stored_run or open_run(source, spec_obj, scratch, progress=progress)
        if spec_obj is None:
            spec_obj, spec_file = spec_for_run(None, run_dir, trust_run_spec=trust_run_spec, purpose="evaluate")
            model_desc = describe_spec_model(spec_obj, spec_file)
        layout = layout if layout is not None else spec_model_layout(spec_obj)
        check_spec_fits_run(spec_obj, run_dir, spec_file)
        check_run_fits(run_dir, layout, model_desc or describe_spec_model(spec_obj, spec_file), RUN_FIX)
        combined: dict[str, Any] = {}
        epochs = None
        if selection is not None:
            resolved = resolve_selection(run_dir.groups, selection, info.picks if info else None)
            epochs = selection_epochs(resolved, run_dir)
            combined["combination_selection"] = resolved.to_json()
        evaluator = CandidateEvaluator(spec_obj, run_dir, device=resolve_device(device), model_desc=model_desc)
        if info is not None:
            note, analysis_warnings = f"analysis read from {info.source}", []
        else:
            info, note, analysis_warnings = _analysis(run_dir, spec_obj)
        if model is not None:
            provenance = read_provenance(model)
            candidate = Candidate(
                "combination", "combination", model_path=model,
                recompute_bn=update_bn and evaluator.has_bn, provenance=provenance,
            )
            combined["combination_provenance"] = provenance
        else:
            assert epochs is not None
            recompute = evaluator.has_bn and (update_bn or is_average(epochs))
            candidate = Candidate("combination", "combination", epochs, recompute_bn=recompute)
        result = run_evaluation(evaluator, candidate, list(baselines), info, resamples, seed, progress=progress)
    if info is None:
        result.notes.append(note)
    result.notes.extend(f"analysis: {message}" for message in analysis_warnings)
    context = {"run_dir": str(source), "spec": spec_obj.name, "analysis": note, **combined}
    evaluation = Evaluation(result, context)
    if out is not None:
        evaluation.write(out)
    return evaluation


def _combination(combination: Any) -> tuple[Path | None, Selection | Mapping[str, Any] | None]:
    """(model file, None) or (None, selection) from what the caller gave."""
    if isinstance(combination, (Selection, Mapping)):
        return None, combination
    path = Path(combination)
    if path.suffix == ".json":
        return None, load_selection(path)
    if path.is_dir():
        raise EvaluationError(
            f"{path} is a folder; pass the combined model file (e.g. {path / 'combined.safetensors'})",
            param="model",
        )
    if not path.exists():
        raise EvaluationError(
            f"{path} does not exist; pass the combined model file (e.g. combined.safetensors), or evaluate a"
            " selection (selection.json) instead",
            param="model",
        )
    if path.suffix not in MODEL_SUFFIXES:
        raise EvaluationError(
            f"{path} is neither a model file ({', '.join(MODEL_SUFFIXES)}) nor a selection (.json)", param="model"
        )
    return path, None


def _given_analysis(analysis: Any) -> AnalysisInfo | None:
    """Picks and plateau windows from an analysis folder or an ``analyze`` result; None when not given."""
    if analysis is None:
        return None
    if isinstance(analysis, RunAnalysis):
        windows = {g: a.plateau_window for g, a in analysis.groups.items()}
        return AnalysisInfo(analysis.selection, windows, f"the analysis of {analysis.source}")
    if isinstance(analysis, (str, os.PathLike)):
        return read_analysis_dir(analysis)
    raise EvaluationError(
        f"{type(analysis).__name__} is neither what `analyze` returned nor the folder it wrote", param="analysis"
    )


def _analysis(run: RunDir, spec: Any) -> tuple[AnalysisInfo | None, str, list[str]]:
    """The analysis computed from the run, and its note; its warnings are issued again and returned."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AnalysisWarning)
        info, note = analysis_for(run, None, spec)
    messages = [str(w.message) for w in caught if issubclass(w.category, AnalysisWarning)]
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return info, note, messages
