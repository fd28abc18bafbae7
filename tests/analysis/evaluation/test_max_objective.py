"""A maximised objective with its own per-example values: the interval judges the objective itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis.evaluation.baselines import Candidate
from analysis.evaluation.evaluate import CandidateEvaluator, run_evaluation
from analysis.evaluation.report import headline
from modules.rundir.run_dir import RunDir
from modules.spec.schema import parse_spec
from tests.modules import _tiny


@torch.no_grad()
def evaluate_closeness(model: nn.Module, split: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """``accuracy``: share of examples predicted within 0.5 (maximised), with per-example values."""
    model.eval()
    x, y = split
    error = (model(x) - y).abs()
    close = (error < 0.5).double()
    return {
        "accuracy": float(close.mean()),
        "loss": float(error.pow(2).mean()),
        "per_example_losses": error.pow(2),
        "per_example_accuracy": close,
    }


def max_spec():
    data = dict(_tiny.SPEC)
    data["evaluate"] = "tests.analysis.evaluation.test_max_objective:evaluate_closeness"
    data["objective"] = {"metric": "accuracy", "mode": "max"}
    return parse_spec(data, "max spec")


def test_max_objective_is_bootstrapped_on_its_own_per_example_values(tmp_path) -> None:
    run = RunDir(_tiny.record_run(tmp_path / "run", epochs=6))
    evaluator = CandidateEvaluator(max_spec(), run)
    evaluator.load(Candidate("epoch 6", "single", {g: [6] for g in run.groups}))
    metrics, values = evaluator.score("test")
    assert values.mean() == pytest.approx(-metrics["accuracy"])  # negated: lower is better throughout

    combination = Candidate("combination", "combination", {g: [6] for g in run.groups})
    result = run_evaluation(evaluator, combination, [2], None, resamples=300, seed=0, progress=False)
    assert result.per_example_name == "-per_example_accuracy"
    comb = result.evaluated[0].metrics["test"]["accuracy"]
    for item, comparison in zip(result.evaluated[1:], result.comparisons):
        expected = -(comb - item.metrics["test"]["accuracy"])  # paired mean of negated scores
        assert comparison.test_interval.mean_difference == pytest.approx(expected)
        if comparison.verdict == "combination better":
            assert comb > item.metrics["test"]["accuracy"]
    assert "`-per_example_accuracy` difference" in headline(result)
