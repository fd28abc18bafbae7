"""sweetspot's public Python API: each pipeline step as a function returning a result object.

    import sweetspot

    analysis = sweetspot.analyze("runs/demo")
    combined = sweetspot.combine("runs/demo", analysis.selection, "combined.safetensors")
    evaluation = sweetspot.evaluate("runs/demo", "combined.safetensors", spec="sweetspot.yaml", output="eval/")

    result = sweetspot.search("runs/demo", "search/", "runs/demo/sweetspot.yaml", num_samples=200)
    summary = sweetspot.pipeline("runs/a", "results/", "sweetspot.yaml", auto_runs=["runs/b"])

The implementations live in ``modules``, ``analysis`` and ``search``; this package only re-exports
them. The search's names load on first use, so ``import sweetspot`` does not import Ray or Optuna.
"""

from analysis.analyze import analyze
from analysis.errors import AnalysisError, AnalysisWarning
from analysis.evaluation.evaluate import EvaluationResult, evaluating_once
from analysis.evaluation.evaluate_run import Evaluation, evaluate
from analysis.pipeline import RunAnalysis
from analysis.thresholds import Thresholds, load_thresholds
from modules import __version__
from modules.combine.combine import CombineResult, combine
from modules.combine.provenance import read_provenance
from modules.demo.train import train_demo
from modules.errors import (
    CheckpointImportError,
    CombineError,
    CombineWarning,
    EvaluationError,
    RunDirError,
    SpecError,
    SweetspotError,
    SweetspotWarning,
    UnsafeCheckpointError,
    UserCodeError,
)
from modules.importing.import_run import import_run
from modules.importing.importer import ImportReport
from modules.importing.layouts import LAYOUTS
from modules.importing.layouts import LAYOUTS as _LAYOUTS
from modules.recorder import Recorder
from modules.rundir.run_dir import RunDir, RunWriter
from modules.spec.couplings import coupling_allows
from modules.spec.schema import Spec, load_spec
from modules.spec.selection import Selection, SelectionError, load_selection
from search.calibration.auto import AutoResult, auto
from search.calibration.calibrate import CalibrationResult, calibrate
from search.calibration.calibration_file import Calibration, CalibrationFileError, load_calibration

#: The checkpoint layouts ``import_run(layout=...)`` and ``sweetspot import --layout`` read.
IMPORT_LAYOUTS: tuple[str, ...] = tuple(_LAYOUTS)

#: Names that need Ray and Optuna: imported when first used (PEP 562).
_ON_RAY = {
    "search": ("search.execution.api", "search"),
    "SearchConfig": ("search.execution.config", "SearchConfig"),
    "SearchResult": ("search.execution.results", "SearchResult"),
    "SearchError": ("search.errors", "SearchError"),
    "pipeline": ("search.workflow.pipeline", "pipeline"),
    "PipelineResult": ("search.workflow.pipeline", "PipelineResult"),
    "PipelineError": ("search.workflow.pipeline", "PipelineError"),
    "Algorithm": ("search.algorithms", "Algorithm"),
    "ALGORITHMS": ("search.algorithms", "ALGORITHMS"),
    "TPE": ("search.algorithms", "TPE"),
    "CmaEs": ("search.algorithms.optuna_samplers", "CmaEs"),
    "GaussianProcess": ("search.algorithms.optuna_samplers", "GaussianProcess"),
    "Random": ("search.algorithms.optuna_samplers", "Random"),
    "Grid": ("search.algorithms.grid", "Grid"),
    "ModuleSoup": ("search.algorithms", "ModuleSoup"),
}


def __getattr__(name: str) -> object:
    if name in _ON_RAY:
        import importlib

        module, attribute = _ON_RAY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'sweetspot' has no attribute {name!r}")


__all__ = [
    "AnalysisError",
    "AnalysisWarning",
    "AutoResult",
    "CalibrationResult",
    "CheckpointImportError",
    "CombineError",
    "CombineResult",
    "CombineWarning",
    "Evaluation",
    "EvaluationError",
    "EvaluationResult",
    "IMPORT_LAYOUTS",
    "ImportReport",
    "Recorder",
    "PipelineError",
    "PipelineResult",
    "Algorithm",
    "ALGORITHMS",
    "TPE",
    "CmaEs",
    "GaussianProcess",
    "Random",
    "Grid",
    "ModuleSoup",
    "RunAnalysis",
    "RunDir",
    "RunDirError",
    "RunWriter",
    "SearchConfig",
    "SearchError",
    "SearchResult",
    "Selection",
    "SelectionError",
    "Spec",
    "SpecError",
    "SweetspotError",
    "SweetspotWarning",
    "Thresholds",
    "UnsafeCheckpointError",
    "UserCodeError",
    "__version__",
    "analyze",
    "auto",
    "calibrate",
    "combine",
    "evaluate",
    "evaluating_once",
    "import_run",
    "load_selection",
    "load_spec",
    "load_thresholds",
    "LAYOUTS",
    "coupling_allows",
    "read_provenance",
    "load_calibration",
    "Calibration",
    "CalibrationFileError",
    "pipeline",
    "search",
    "train_demo",
]
