"""Keep coupled groups' picks together: the spec's couplings bound how far their epochs may differ.

Groups trained together (a backbone and its heads) co-adapt: a head from epoch 18 on a backbone
from epoch 10 can be worse than either epoch alone. Within a coupling the most confident pick
leads and the others are moved to the nearest recorded epoch within ``max_epoch_gap`` of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.techniques.base import fmt_window

if TYPE_CHECKING:
    from analysis.pipeline import GroupAnalysis
    from modules.spec import Spec

Pick = int | tuple[int, int]


def _describe(pick: Pick) -> str:
    return str(pick) if isinstance(pick, int) else f"average {fmt_window(pick)}"


def _span(pick: Pick) -> tuple[int, int]:
    return (pick, pick) if isinstance(pick, int) else pick


def move_within_gap(pick: Pick, lead: Pick, max_epoch_gap: int, epochs: list[int]) -> Pick:
    """``pick`` if it lies within ``max_epoch_gap`` epochs of ``lead``; else the nearest allowed pick.

    A window lead drags an out-of-range follower onto the same window; an epoch lead moves it to
    the recorded epoch within the gap that is closest to where it was (its centre for a window).
    """
    lead_first, lead_last = _span(lead)
    first, last = _span(pick)
    if first >= lead_first - max_epoch_gap and last <= lead_last + max_epoch_gap:
        return pick
    if not isinstance(lead, int):
        return lead
    target = (first + last) / 2
    allowed = [e for e in epochs if abs(e - lead) <= max_epoch_gap]
    return min(allowed, key=lambda e: (abs(e - target), abs(e - lead)))


def apply_couplings(results: dict[str, GroupAnalysis], spec: Spec, epochs: list[int]) -> list[str]:
    """Move coupled groups' picks within their coupling's gap of its most confident pick; return notes."""
    notes = []
    for index, coupling in enumerate(spec.couplings):
        members = [g for g in coupling.groups if g in results]
        if len(members) < 2:
            continue
        name = coupling.name or f"couplings[{index}]"
        lead = max(members, key=lambda g: (results[g].final.confidence, -members.index(g)))
        lead_pick = results[lead].pick
        for group in members:
            if group == lead:
                continue
            before = results[group].pick
            after = move_within_gap(before, lead_pick, coupling.max_epoch_gap, epochs)
            if after == before:
                continue
            note = (
                f"moved from {_describe(before)} to {_describe(after)}: coupling {name} keeps {group}"
                f" within {coupling.max_epoch_gap} epochs of {lead} (the coupling's most confident"
                f" pick, {_describe(lead_pick)} at {results[lead].final.confidence:.0%})"
            )
            results[group].pick = after
            results[group].coupling_note = note
            results[group].moved_by.append(name)
            notes.append(f"{group}: {note}")
    return notes
