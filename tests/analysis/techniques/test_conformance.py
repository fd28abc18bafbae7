"""One suite over every registered technique (as Optuna runs one suite over all its samplers)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from pydantic import BaseModel

from analysis.techniques import TECHNIQUES
from analysis.techniques.base import GroupContext
from tests.analysis._synthetic import EPOCHS, context_for

E = np.array(EPOCHS, dtype=float)
LOSS = 0.2 + (E - 36) ** 2 / 2000 + 0.005 * np.sin(E)
F1 = 0.9 - ((E - 30) / 40) ** 2
HEALTH = {"grad_norm": 1 + 0.01 * E, "grad_norm_ratio": np.full(len(E), 0.5)}


def full_context() -> GroupContext:
    return context_for({"val_loss": LOSS, "val_f1": F1}, [("val_f1", "max"), ("val_loss", "min")], health=HEALTH)


def run_all(context: GroupContext, name: str):
    """Run the voting techniques first (the ensemble needs their picks), then ``name``."""
    for other, technique in TECHNIQUES.items():
        if technique.votes and other != name:
            context.recommendations[other] = technique.run(context)
    return TECHNIQUES[name].run(context)


def shrunk(context: GroupContext, keep: int) -> GroupContext:
    """The context cut to its first ``keep`` epochs (below what the statistics need)."""
    series = context.series
    cut = {k: v[:keep] for k, v in series.values.items()}
    series = dataclasses.replace(
        series, epochs=series.epochs[:keep], values=cut, goodness={k: v[:keep] for k, v in series.goodness.items()},
        composite=series.composite[:keep], loss_goodness=series.loss_goodness[:keep],
        health={k: v[:keep] for k, v in series.health.items()},
    )
    return GroupContext(series, context.thresholds)


def with_nan(context: GroupContext) -> GroupContext:
    series = context.series
    composite = series.composite.copy()
    composite[3] = np.nan
    return GroupContext(dataclasses.replace(series, composite=composite), context.thresholds)


@pytest.fixture(params=list(TECHNIQUES), ids=list(TECHNIQUES))
def name(request) -> str:
    return request.param


def test_params_are_a_pydantic_model_with_defaults(name: str) -> None:
    technique = TECHNIQUES[name]
    assert isinstance(technique.params, BaseModel)
    assert type(technique)().params == technique.params
    with pytest.raises(ValueError, match=r"no_such_setting\n  Extra inputs are not permitted"):
        type(technique)(no_such_setting=1)


def test_recommends_a_recorded_epoch_with_confidence_in_0_1(name: str) -> None:
    context = full_context()
    rec = run_all(context, name)
    assert rec.epoch in context.epochs.tolist()
    if rec.average is not None:
        assert rec.average[0] in EPOCHS and rec.average[1] in EPOCHS and rec.average[0] <= rec.epoch <= rec.average[1]
    assert 0.0 <= rec.confidence <= 1.0
    assert rec.reasons and all(isinstance(r, str) and r for r in rec.reasons)
    json.dumps(rec.to_json(), allow_nan=False)


def test_is_deterministic(name: str) -> None:
    assert run_all(full_context(), name) == run_all(full_context(), name)


@pytest.mark.parametrize("broken", [lambda c: shrunk(c, 3), with_nan], ids=["too_short", "nan"])
def test_abstains_cleanly_on_a_series_it_cannot_judge(name: str, broken) -> None:
    context = broken(full_context())
    rec = run_all(context, name)
    assert rec.confidence == 0.0 and rec.epoch in context.epochs.tolist()
    assert "abstains" in rec.reasons[0]
    json.dumps(rec.to_json(), allow_nan=False)
