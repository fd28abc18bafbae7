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
    # the reason says what each backer picked (plateau's 42 is only near 44) and who voted elsewhere
    assert rec.reasons[0] == (
        "vote: mcda 44, task_metrics 44, plateau 42 agree within one checkpoint on epoch 44"
        " (vote share 83% of the confidence-weighted vote; confidence 60%: the mean of the 4 voting techniques'"
        " confidence, those voting elsewhere counted as 0; elsewhere: gradient_health 20)"
    )


def test_split_vote_falls_back_to_the_plateau_average() -> None:
    # four picks far apart with equal confidence: each share 25% < 50% -> average the plateau 8-14
    rec = vote({"plateau": (10, 0.5), "task_metrics": (30, 0.5), "mcda": (50, 0.5), "gradient_health": (60, 0.5)}, [8, 14])
    assert rec.average == (8, 14)
    assert "winning share 25% < voting_confidence 50%; averaging the plateau window 8-14" in rec.reasons[0]


def test_split_vote_without_plateau_keeps_the_top_epoch() -> None:
    rec = vote({"plateau": (10, 0.2), "task_metrics": (30, 0.6), "mcda": (50, 0.5), "gradient_health": (60, 0.5)}, None)
    assert rec.average is None and rec.epoch == 30
    assert "no plateau to average" in rec.reasons[0]
    # task_metrics alone backs 30: share 0.6 / (0.2 + 0.6 + 0.5 + 0.5) = 33%
    assert rec.reasons[1] == (
        "vote: task_metrics alone picks epoch 30 (vote share 33% of the confidence-weighted vote;"
        " elsewhere: plateau 10, mcda 50, gradient_health 60)"
    )


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
    assert rec.reasons[0] == (
        "vote: plateau and task_metrics both pick epoch 30 (vote share 80% of the confidence-weighted vote;"
        " confidence 40%: the mean of the 3 voting techniques' confidence, those voting elsewhere counted as 0;"
        " elsewhere: mcda 50)"
    )


def test_every_technique_abstaining_says_so() -> None:
    # no voter: no support anywhere, the last checkpoint (60) by default, share 0% -> split
    rec = vote({"plateau": (30, 0.0), "task_metrics": (30, 0.0), "mcda": (50, 0.0), "gradient_health": (60, 0.0)}, None)
    assert rec.epoch == 60 and rec.confidence == 0.0
    assert rec.reasons[1] == "vote: every technique abstains; epoch 60, the last checkpoint, by default"


def test_a_unanimous_vote_says_its_share_and_its_confidence_apart() -> None:
    # three techniques 70% sure all pick 30: the whole vote (share 100%), but a confidence of 70%,
    # which is the number the report prints as "Confidence: 70%"; the reason says both, and which is which
    rec = vote({"plateau": (30, 0.7), "task_metrics": (30, 0.7), "mcda": (30, 0.7), "gradient_health": (60, 0.0)}, [24, 36])
    assert rec.epoch == 30 and abs(rec.confidence - 0.7) < 1e-9
    assert rec.reasons[0] == (
        "vote: mcda, plateau, task_metrics all pick epoch 30 (vote share 100% of the confidence-weighted vote;"
        " confidence 70%: the mean of the 3 voting techniques' confidence)"
    )
    assert f"confidence {rec.confidence:.0%}" in rec.reasons[0]
