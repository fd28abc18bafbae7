from __future__ import annotations

import numpy as np

from analysis.techniques import get_technique
from analysis.thresholds import McdaWeights, Thresholds
from tests.analysis._synthetic import EPOCHS, context_for

E = np.array(EPOCHS, dtype=float)
LOSS = 0.2 + (E - 20) ** 2 / 4000  # best at 20; normalised 1 - (e-20)^2/1600 (farthest e=60)
TASK = 0.9 - (E - 40) ** 2 / 4000  # best at 40; normalised 1 - (e-40)^2/1444 (farthest e=2)


def pick(weights: dict[str, float]) -> int:
    context = context_for(
        {"val_loss": LOSS, "val_task": TASK},
        [("val_task", "max")],
        thresholds=Thresholds(mcda_weights=McdaWeights(**weights)),
    )
    return get_technique("mcda").recommend(context).epoch


def test_weights_steer_the_pick() -> None:
    assert pick({"loss": 1.0, "task": 0.0, "stability": 0.0, "gradient": 0.0}) == 20
    assert pick({"loss": 0.0, "task": 1.0, "stability": 0.0, "gradient": 0.0}) == 40


def test_equal_loss_and_task_weights_by_hand() -> None:
    # maximise (1-(e-20)^2/1600) + (1-(e-40)^2/1444): 1444(e-20) + 1600(e-40) = 0
    # -> e = 92880/3044 = 30.51, nearest recorded epoch 30 (0.51 away; 32 is 1.49 away).
    assert pick({"loss": 0.5, "task": 0.5, "stability": 0.0, "gradient": 0.0}) == 30


def test_gradient_criterion_counts() -> None:
    # Flat loss and task; the gradient-norm ratio explodes (x20) from epoch 42, so only epochs
    # 2..40 score 1 on the gradient criterion; ties resolve to the middle of 2..40, i.e. epoch 20.
    context = context_for(
        {"val_loss": np.full(len(E), 0.5), "val_task": np.full(len(E), 0.5)},
        [("val_task", "max")],
        health={"grad_norm_ratio": np.where(E <= 40, 0.1, 2.0)},
        thresholds=Thresholds(mcda_weights=McdaWeights(loss=0.0, task=0.0, stability=0.0, gradient=1.0)),
    )
    rec = get_technique("mcda").recommend(context)
    assert rec.epoch == 20
    assert rec.details["criteria_at_pick"]["gradient"] == 1.0
