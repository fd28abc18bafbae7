from __future__ import annotations

import numpy as np

from analysis.techniques import Recommendation, get_technique
from analysis.thresholds import Thresholds
from tests.analysis._synthetic import EPOCHS, context_for

E = np.array(EPOCHS, dtype=float)


def vote(picks: dict[str, tuple[int, float]], plateau_window: list[int] | None, voting_confidence: float = 0.5):
    context = context_for(
        {"val_loss": (E - 30) ** 2}, [("val_loss", "min")], thresholds=Thresholds(voting_confidence=voting_confidence)
    )
    for name, (epoch, confidence) in picks.items():
        details = {"plateau_window": plateau_window} if name == "plateau" else {}
        context.recommendations[name] = Recommendation(epoch, confidence, [f"{name} says {epoch}"], details)
    return get_technique("ensemble").recommend(context)


def test_agreeing_majority_wins() -> None:
    # 42, 44 and 44 agree (within one 2-epoch gap); weighted mean (0.8*42 + 0.9*44 + 0.7*44)/2.4 = 43.33
    # -> recorded epoch 44; share 2.4 / 2.9 = 83% >= 50%; confidence 2.4 / 4 voters = 0.6
    rec = vote(
        {"plateau": (42, 0.8), "task_metrics": (44, 0.9), "mcda": (44, 0.7), "gradient_health": (20, 0.5)}, [38, 46]
    )
    assert rec.epoch == 44 and rec.average is None
    assert abs(rec.details["winning_share"] - 2.4 / 2.9) < 1e-9
    assert abs(rec.confidence - 0.6) < 1e-9
    assert rec.reasons[0].startswith("vote: mcda, plateau, task_metrics agree on epoch 44 (83%")


def test_split_vote_falls_back_to_the_plateau_average() -> None:
    # four picks far apart with equal confidence: each share 25% < 50% -> average the plateau 8-14
    rec = vote({"plateau": (10, 0.5), "task_metrics": (30, 0.5), "mcda": (50, 0.5), "gradient_health": (60, 0.5)}, [8, 14])
    assert rec.average == (8, 14)
    assert "winning share 25% < voting_confidence 50%; averaging the plateau window 8-14" in rec.reasons[0]


def test_split_vote_without_plateau_keeps_the_top_epoch() -> None:
    rec = vote({"plateau": (10, 0.2), "task_metrics": (30, 0.6), "mcda": (50, 0.5), "gradient_health": (60, 0.5)}, None)
    assert rec.average is None and rec.epoch == 30
    assert "no plateau to average" in rec.reasons[0]


def test_threshold_controls_the_fallback() -> None:
    picks = {"plateau": (30, 0.6), "task_metrics": (30, 0.6), "mcda": (50, 0.6), "gradient_health": (60, 0.2)}
    # share 1.2 / 2.0 = 60%
    assert vote(picks, [24, 36], voting_confidence=0.55).epoch == 30
    assert vote(picks, [24, 36], voting_confidence=0.65).average == (24, 36)


def test_abstaining_technique_does_not_dilute_the_vote() -> None:
    # gradient health abstains (confidence 0): share = 1.2 / (0.6 + 0.6 + 0.3) = 80%, not diluted;
    # confidence = backing / voting techniques = 1.2 / 3 = 0.4
    rec = vote({"plateau": (30, 0.6), "task_metrics": (30, 0.6), "mcda": (50, 0.3), "gradient_health": (60, 0.0)}, [24, 36])
    assert rec.epoch == 30 and rec.average is None
    assert abs(rec.details["winning_share"] - 0.8) < 1e-9
    assert abs(rec.confidence - 0.4) < 1e-9
    assert rec.details["abstained"] == ["gradient_health"]
