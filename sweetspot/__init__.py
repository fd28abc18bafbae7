"""sweetspot's public Python API: each pipeline step as a function returning a result object.

    import sweetspot

    analysis = sweetspot.analyze("runs/demo")
    combined = sweetspot.combine("runs/demo", analysis.selection, "combined.safetensors")
    evaluation = sweetspot.evaluate("runs/demo", "combined.safetensors", output="eval/")

The implementations live in ``modules`` and ``analysis``; this package only re-exports them.
"""

from analysis.analyze import analyze
from analysis.errors import AnalysisError, AnalysisWarning
from analysis.evaluation.evaluate import EvaluationResult
from analysis.evaluation.evaluate_run import Evaluation, evaluate
from analysis.pipeline import RunAnalysis
from analysis.thresholds import Thresholds, load_thresholds
from modules import __version__
from modules.combine import CombineResult, combine
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
)
from modules.import_run import import_run
from modules.importer import ImportReport
from modules.recorder import Recorder
from modules.rundir import RunDir, RunWriter
from modules.selection import Selection, SelectionError, load_selection
from modules.spec import Spec, load_spec
from search.auto import AutoResult, auto
from search.calibrate import CalibrationResult, calibrate

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
    "ImportReport",
    "Recorder",
    "RunAnalysis",
    "RunDir",
    "RunDirError",
    "RunWriter",
    "Selection",
    "SelectionError",
    "Spec",
    "SpecError",
    "SweetspotError",
    "SweetspotWarning",
    "Thresholds",
    "UnsafeCheckpointError",
    "__version__",
    "analyze",
    "auto",
    "calibrate",
    "combine",
    "evaluate",
    "import_run",
    "load_selection",
    "load_spec",
    "load_thresholds",
]
