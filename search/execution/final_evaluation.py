"""The test split, used once after the search: the pick against every baseline of the evaluate
step (paired bootstrap intervals), and each top candidate's test score to show the shrinkage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from analysis.evaluation.baselines import DEFAULT_SINGLE_EPOCHS, Candidate
from analysis.evaluation.evaluate import CandidateEvaluator, run_evaluation
from analysis.evaluation.evaluate_run import Evaluation
from modules.rundir.run_dir import RunDir
from modules.spec.schema import Spec
from search.execution.results import SearchResult


def evaluate_pick(
    result: SearchResult,
    run: RunDir,
    spec: Spec,
    splits: Mapping[str, Any],
    analysis: Any = None,
    device: str = "cpu",
    resamples: int = 2000,
    progress: bool = True,
) -> Evaluation:
    """Evaluate the search's pick as ``sweetspot evaluate`` would (the same ``Evaluation`` it
    returns, ``.headline()`` included); fill in test scores of the top."""
    evaluator = CandidateEvaluator(spec, run, splits=dict(splits), device=device, splits_are_specs=True)
    update_bn = bool(result.settings.get("update_bn"))

    def candidate(name: str, epochs: Mapping[str, list[int]]) -> Candidate:
        epochs = {g: list(v) for g, v in epochs.items()}
        # The same BatchNorm rule as the search's trials, so test scores are of the scored models.
        return Candidate(name, "combination", epochs, recompute_bn=evaluator.has_bn and update_bn)

    combination = candidate("combination", result.pick.epochs)
    evaluation = run_evaluation(
        evaluator, combination, list(DEFAULT_SINGLE_EPOCHS), analysis, resamples, seed=0, progress=progress
    )
    metric = result.objective
    for rank, top in enumerate(result.top, start=1):
        top.test_score = evaluator.evaluate(candidate(f"top {rank}", top.epochs)).metrics["test"][metric]
    for baseline in result.baselines.values():
        baseline.test_score = evaluator.evaluate(candidate(baseline.origin, baseline.epochs)).metrics["test"][metric]
    result.evaluation = Evaluation(evaluation, {"run_dir": run.location, "combination": "the search's pick"})
    return result.evaluation
