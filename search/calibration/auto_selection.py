"""One run's calibrated selection: ``search.calibration.refine`` on the run's whole validation split.

One evaluation is one selection scored on the run's whole validation split (BatchNorm statistics
recomputed first where the selection averages, or everywhere with ``update_bn``, as
``combine --update-bn`` will build it); a selection scored before costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analysis.evaluation.evaluate import CandidateEvaluator
from modules.combine.plan import selection_epochs
from modules.rundir.run_dir import RunDir
from modules.spec.schema import Spec
from modules.spec.selection import Selection, choice_for_epochs
from search.calibration.calibration_file import Calibration
from search.calibration.refine import AutoSelection, BudgetedScore, automatic_selection
from search.calibration.transfer_fit import budget_for

THRESHOLDS_PICK = "the thresholds' pick"
DEFAULTS_PICK = "the default thresholds' pick"


@dataclass
class CalibratedSelection:
    selection: Selection
    #: Whether combine must recompute BatchNorm statistics to build what was scored.
    update_bn: bool
    chosen: AutoSelection
    per_checkpoint: float
    bn_recomputes: int

    def record(self) -> dict[str, Any]:
        c = self.chosen
        return {
            "guard": {"chosen": c.source, "val": {**c.references, c.source: c.value}},
            "budget": {
                "evaluations": c.evaluations, "budget": c.budget, "per_checkpoint": self.per_checkpoint,
                "batchnorm_recomputes": self.bn_recomputes, "greedy_soup_complete": c.soup_complete,
            },
            "auto_val": c.value,
            "greedy_soup_val": c.soup.objective,
            "greedy_soup_epochs": c.soup.epochs,
        }


def calibrated_selection(
    run: RunDir, spec: Spec, calibration: Calibration, thresholds_pick: Selection, default_pick: Selection,
    update_bn: bool, per_checkpoint: float, device: str = "cpu",
) -> CalibratedSelection:
    calibration.check_groups(run.groups, f"run {run.label}")
    evaluator = CandidateEvaluator(spec, run, device=device)
    recomputed = 0

    def recompute(epochs: dict[str, list[int]]) -> bool:
        return evaluator.has_bn and evaluator.batches is not None and (update_bn or any(len(v) > 1 for v in epochs.values()))

    def score(epochs: dict[str, list[int]]) -> float:
        nonlocal recomputed
        recomputed += recompute(epochs)
        return evaluator.val_objective(epochs, recompute(epochs))

    budgeted = BudgetedScore(score, budget_for(len(run.epochs), per_checkpoint))
    candidates = {THRESHOLDS_PICK: selection_epochs(thresholds_pick, run), DEFAULTS_PICK: selection_epochs(default_pick, run)}
    chosen = automatic_selection(
        budgeted, run.epochs, run.groups, spec.objective.mode, calibration.priors, candidates, spec.couplings
    )
    selection = Selection({g: choice_for_epochs(chosen.selection[g], run.epochs) for g in run.groups})
    return CalibratedSelection(selection, recompute(chosen.selection), chosen, per_checkpoint, recomputed)
