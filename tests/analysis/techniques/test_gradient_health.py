from __future__ import annotations

import numpy as np

from analysis.techniques import get_technique
from tests.analysis._synthetic import EPOCHS, context_for

E = np.array(EPOCHS, dtype=float)
FLAT = {"val_loss": np.full(len(E), 0.5)}


def recommend(health: dict[str, np.ndarray]):
    return get_technique("gradient_health").recommend(context_for(FLAT, [("val_loss", "min")], health=health))


def test_exploding_gradient_ratio() -> None:
    # ratio 0.5 for 20 checkpoints (the median), 6.0 = 12x from epoch 42 -> last healthy epoch 40
    rec = recommend({"grad_norm_ratio": np.where(E <= 40, 0.5, 6.0)})
    assert rec.epoch == 40
    assert rec.details["degradation_epoch"] == 42
    assert "12.0x its median" in rec.reasons[0]
    assert any(r.startswith("gradient norm ratio stable") for r in rec.reasons)


def test_dead_units_rising() -> None:
    # dead fraction 0.02 (baseline) then 0.30 from epoch 48: a rise of 0.28 > 0.10 -> epoch 46
    rec = recommend({"grad_norm_ratio": np.full(len(E), 0.3), "dead_fraction": np.where(E <= 46, 0.02, 0.30)})
    assert rec.epoch == 46
    assert "dead fraction 0.30 vs early 0.02" in rec.reasons[0]


def test_early_instability_and_single_spike_are_not_degradation() -> None:
    # update ratio 50x its median at epochs 2 and 4 (before any healthy checkpoint), a lone
    # spike at 30: nothing sustained after a healthy checkpoint -> no epoch singled out: abstain
    update = np.full(len(E), 0.01)
    update[:2] = 0.5
    ratio = np.full(len(E), 0.2)
    ratio[14] = 5.0
    rec = recommend({"grad_norm_ratio": ratio, "update_ratio": update})
    assert rec.details["degradation_epoch"] is None
    assert rec.epoch == 60
    assert rec.confidence == 0.0
    assert "no degradation to stop before, so no vote" in rec.reasons[0]
    assert rec.reasons[1].startswith("gradient norm ratio unsteady (grad_norm_ratio within 25.0x")


def test_shrinking_updates_under_lr_decay_are_healthy() -> None:
    rec = recommend({"grad_norm_ratio": np.full(len(E), 0.2), "update_ratio": 0.05 * np.exp(-E / 8)})
    assert rec.details["degradation_epoch"] is None


def test_no_gradient_data_abstains() -> None:
    rec = get_technique("gradient_health").recommend(context_for(FLAT, [("val_loss", "min")]))
    assert rec.confidence == 0.0
    assert "no gradient data" in rec.reasons[0]
