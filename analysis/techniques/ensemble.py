"""Ensemble vote: a confidence-weighted vote over the other techniques' picks.

Techniques with confidence 0 abstain. Picks within one checkpoint gap of each other agree. The candidate with the most agreeing
confidence wins; its share is that confidence over all confidence. Below ``voting_confidence``
the vote is split, and the ensemble recommends averaging the plateau window instead.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from analysis.stats import snap_to_epoch
from analysis.techniques.base import (
    GroupContext,
    Recommendation,
    Technique,
    fmt_window,
    plateau_window,
)


class EnsembleParams(BaseModel):
    """Settings of the ensemble vote."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Picks within this many median checkpoint gaps of a candidate back it.
    agree_within_gaps: float = Field(default=1.0, ge=0)


def vote_reason(
    backers: dict[str, Recommendation],
    voters: dict[str, Recommendation],
    epoch: int,
    share: float,
    confidence: float | None = None,
) -> str:
    """What the winning techniques picked and how they reach ``epoch``, e.g. ``"vote: mcda 10,
    task_metrics 10, plateau 8 agree within one checkpoint on epoch 10 (vote share 100% of the
    confidence-weighted vote; confidence 70%: the mean of the 3 voting techniques' confidence)"``.

    The two numbers differ: the share is the backers' part of all voting confidence, the confidence
    (the report's "Confidence") is their confidence over every voting technique, so a unanimous vote of
    techniques that are 70% sure has a share of 100% and a confidence of 70%. The confidence is given
    when the vote decides the pick (on a split vote the fallback's confidence is the one reported)."""
    if not backers:
        return f"vote: every technique abstains; epoch {epoch}, the last checkpoint, by default"
    order = sorted(backers, key=lambda n: (abs(backers[n].epoch - epoch), n))
    others = sorted((n for n in voters if n not in backers), key=lambda n: (voters[n].epoch, n))
    tail = f"(vote share {share:.0%} of the confidence-weighted vote"
    if confidence is not None:
        whose = f"the mean of the {len(voters)} voting techniques' confidence" if len(voters) > 1 else "its own"
        tail += f"; confidence {confidence:.0%}: {whose}" + (", those voting elsewhere counted as 0" if others else "")
    tail += f"; elsewhere: {', '.join(f'{n} {voters[n].epoch}' for n in others)})" if others else ")"
    if len(backers) == 1:
        return f"vote: {order[0]} alone picks epoch {epoch} {tail}"
    if all(backers[n].epoch == epoch for n in backers):
        names = f"{order[0]} and {order[1]} both" if len(order) == 2 else f"{', '.join(order)} all"
        return f"vote: {names} pick epoch {epoch} {tail}"
    picks = ", ".join(f"{n} {backers[n].epoch}" for n in order)
    return f"vote: {picks} agree within one checkpoint on epoch {epoch} {tail}"


class EnsembleTechnique(Technique):
    """Confidence-weighted vote; falls back to the plateau's average window on a split vote."""

    name = "ensemble"
    votes = False
    marker = "*"
    Params = EnsembleParams

    def recommend(self, context: GroupContext) -> Recommendation:
        epochs = context.epochs
        eligible = {
            name: rec
            for name, rec in context.recommendations.items()
            if name != self.name and (context.voting is None or name in context.voting)
        }
        voters = {name: rec for name, rec in eligible.items() if rec.confidence > 0}
        tolerance = self.params.agree_within_gaps * float(np.median(np.diff(epochs)))
        total = sum(rec.confidence for rec in voters.values())
        support: dict[int, float] = {}
        for candidate in sorted({rec.epoch for rec in voters.values()}):
            support[candidate] = sum(r.confidence for r in voters.values() if abs(r.epoch - candidate) <= tolerance)
        winner = max(support, key=lambda c: (support[c], -c)) if support else int(epochs[-1])
        backers = {n: r for n, r in voters.items() if abs(r.epoch - winner) <= tolerance}
        backing = sum(r.confidence for r in backers.values())
        epoch = (
            snap_to_epoch(sum(r.epoch * r.confidence for r in backers.values()) / backing, epochs)
            if backing > 0
            else winner
        )
        share = backing / total if total > 0 else 0.0
        details = {
            "votes": {n: {"epoch": r.epoch, "confidence": round(r.confidence, 4)} for n, r in voters.items()},
            "winner": epoch,
            "winning_share": share,
            "backers": sorted(backers),
            "abstained": sorted(set(eligible) - set(voters)),
            "voting_confidence": context.thresholds.voting_confidence,
        }
        confidence = backing / len(voters) if voters else 0.0
        decides = share >= context.thresholds.voting_confidence
        reasons = [vote_reason(backers, voters, epoch, share, confidence if decides else None)]
        for name in sorted(backers, key=lambda n: -backers[n].confidence):
            reasons.append(backers[name].reasons[0])
        if decides:
            details["fallback"] = None
            return Recommendation(epoch, confidence, reasons, details)
        window = plateau_window(eligible)
        split = f"vote split: winning share {share:.0%} < voting_confidence {context.thresholds.voting_confidence:.0%}"
        if window is None:
            details["fallback"] = "no plateau to average; kept the top-voted epoch"
            return Recommendation(epoch, confidence, [f"{split}, and no plateau to average; keeping epoch {epoch}", *reasons], details)
        details["fallback"] = "average plateau window"
        average = (int(window[0]), int(window[1]))
        return Recommendation(
            snap_to_epoch(sum(average) / 2, epochs),
            next(r.confidence for r in eligible.values() if r.details.get("plateau_window")),
            [f"{split}; averaging the plateau window {fmt_window(average)}", *reasons],
            details,
            average=average,
        )

