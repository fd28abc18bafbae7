"""Fit the transferable part of a calibration on searched runs, and measure how it carries over.

Per run, ``fit_priors`` profiles each group around the search's pick on the search part of
validation (the basis every search trial was scored on; selections the search scored are read
from its ``trials.parquet``). The runs' priors are joined into one calibration. How close it
comes is measured by running the automatic selection itself, with the budget ``auto`` would
have, on each fitted run (with the joint priors) and, when several runs are fitted, on each run
left out of the fit (with the priors of the others).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from analysis.thresholds import Thresholds
from modules.rundir.digest import run_key
from search.calibration.calibration_file import (
    Calibration,
    FittedRun,
    GroupPrior,
    fit_priors,
    joint_priors,
)
from search.calibration.cases import CalibrationCase, EpochSet
from search.calibration.refine import BudgetedScore, automatic_selection

#: Evaluations per checkpoint that ``auto`` spends by default (the guard included).
DEFAULT_EVALUATIONS_PER_CHECKPOINT = 3.0


@dataclass
class TransferOutcome:
    """The automatic selection on one calibration run: fitted on it, or with it left out."""

    run: str
    kind: str  # "fitted" or "left out"
    selection: EpochSet
    source: str
    val: float
    val_gap: float
    soup_val: float
    soup_val_gap: float
    test: float
    test_gap: float
    soup_test: float
    evaluations: int
    budget: int


def profile_stride(case: CalibrationCase) -> int:
    """Every epoch, unless profiling each group would cost more than half the evaluations the
    search spent: then every k-th (calibrating stays cheaper than the search it calibrates to)."""
    allowed = max(len(case.search.known), 2) / 2
    cost = len(case.groups) * len(case.epochs)
    return max(1, math.ceil(cost / allowed))


def fit_case(case: CalibrationCase) -> dict[str, GroupPrior]:
    score = BudgetedScore(case.val_score, 1 << 30)  # the search's own trials answer first, free
    return fit_priors(score, case.epochs, case.groups, case.search.pick, case.search.mode, profile_stride(case))


def build_calibration(cases: list[CalibrationCase], fits: list[dict[str, GroupPrior]], thresholds: Thresholds) -> Calibration:
    first = cases[0]
    return Calibration(
        objective={"metric": first.search.metric, "mode": first.search.mode},
        groups=list(first.groups),
        thresholds=thresholds,
        priors=joint_priors(fits),
        fitted_on=[
            FittedRun(run=c.run.location, search=str(c.search.folder), manifest_sha256=run_key(c.run), checkpoints=len(c.epochs))
            for c in cases
        ],
    )


def budget_for(checkpoints: int, per_checkpoint: float = DEFAULT_EVALUATIONS_PER_CHECKPOINT) -> int:
    return int(math.floor(per_checkpoint * checkpoints))


def auto_on_case(case: CalibrationCase, priors: dict[str, GroupPrior], kind: str, thresholds: Thresholds) -> TransferOutcome:
    """The automatic selection on ``case`` with ``priors``, scored on the search part of validation."""
    score = BudgetedScore(case.val_score, budget_for(len(case.epochs)))
    candidates = {"the thresholds' pick": case.selection_of(case.analyse(thresholds))}
    chosen = automatic_selection(score, case.epochs, case.groups, case.search.mode, priors, candidates, case.spec.couplings)
    test = case.test_score(chosen.selection)
    soup = {g: list(chosen.soup.epochs) for g in case.groups}
    return TransferOutcome(
        case.label, kind, chosen.selection, chosen.source, chosen.value, case.gap(chosen.value),
        chosen.soup.objective, case.gap(chosen.soup.objective), test, case.test_gap(test), case.test_score(soup),
        chosen.evaluations, chosen.budget,
    )


def transfer_outcomes(cases: list[CalibrationCase], fits: list[dict[str, GroupPrior]], calibration: Calibration) -> list[TransferOutcome]:
    """Auto on every fitted run with the joint priors; with several runs, on each left out too."""
    out = [auto_on_case(c, calibration.priors, "fitted", calibration.thresholds) for c in cases]
    if len(cases) > 1:
        for index, case in enumerate(cases):
            others = joint_priors([f for i, f in enumerate(fits) if i != index])
            out.append(auto_on_case(case, others, "left out", calibration.thresholds))
    return out


__all__ = ["TransferOutcome", "build_calibration", "fit_case", "transfer_outcomes"]
