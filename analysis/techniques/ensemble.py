"""Ensemble vote: a confidence-weighted vote over the other techniques' picks.

Techniques with confidence 0 abstain. Picks within one checkpoint gap of each other agree. The candidate with the most agreeing
confidence wins; its share is that confidence over all confidence. Below ``voting_confidence``
the vote is split, and the ensemble recommends averaging the plateau window instead.
"""

from __future__ import annotations

import numpy as np

from analysis.stats import snap_to_epoch
from analysis.techniques.base import (
    TECHNIQUES,
    GroupContext,
    Recommendation,
    Technique,
    fmt_window,
    register,
)


class EnsembleTechnique(Technique):
    """Confidence-weighted vote; falls back to the plateau's average window on a split vote."""

    name = "ensemble"
    votes = False

    def recommend(self, context: GroupContext) -> Recommendation:
        epochs = context.epochs
        eligible = {
            name: rec for name, rec in context.recommendations.items() if name in TECHNIQUES and TECHNIQUES[name].votes
        }
        voters = {name: rec for name, rec in eligible.items() if rec.confidence > 0}
        tolerance = float(np.median(np.diff(epochs)))
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
        reasons = [
            f"vote: {', '.join(sorted(backers)) or 'none'} agree on epoch {epoch}"
            f" ({share:.0%} of the confidence-weighted vote)"
        ]
        for name in sorted(backers, key=lambda n: -backers[n].confidence):
            reasons.append(backers[name].reasons[0])
        confidence = backing / len(voters) if voters else 0.0
        if share >= context.thresholds.voting_confidence:
            details["fallback"] = None
            return Recommendation(epoch, confidence, reasons, details)
        plateau = context.recommendations.get("plateau")
        window = plateau.details.get("plateau_window") if plateau else None
        split = f"vote split: winning share {share:.0%} < voting_confidence {context.thresholds.voting_confidence:.0%}"
        if window is None:
            details["fallback"] = "no plateau to average; kept the top-voted epoch"
            return Recommendation(epoch, confidence, [f"{split}, and no plateau to average; keeping epoch {epoch}", *reasons], details)
        details["fallback"] = "average plateau window"
        average = (int(window[0]), int(window[1]))
        return Recommendation(
            snap_to_epoch(sum(average) / 2, epochs),
            plateau.confidence,
            [f"{split}; averaging the plateau window {fmt_window(average)}", *reasons],
            details,
            average=average,
        )


register(EnsembleTechnique())
