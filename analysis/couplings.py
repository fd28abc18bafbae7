"""Keep coupled groups' picks together, by the one rule in ``modules.spec.couplings``.

Groups trained together (a backbone and its heads) co-adapt: a head from epoch 18 on a backbone
from epoch 10 can be worse than either epoch alone. Within a coupling the most confident pick
leads; every other pick that breaks the rule against the picks kept so far is moved to the
nearest of its own analysed epochs that keeps it (never onto an epoch its metrics skipped), or
onto the lead's window when the lead averages one.
"""

from __future__ import annotations

from collections.abc import Sequence

from analysis.results import GroupAnalysis, pick_label
from modules.spec.couplings import Pick, coupling_allows, coupling_name, pick_centre
from modules.spec.schema import Coupling, Spec


def move_within_coupling(
    group: str, pick: Pick, kept: dict[str, Pick], coupling: Coupling, lead: str, epochs: Sequence[int]
) -> Pick | None:
    """``pick`` if ``kept`` plus it keeps ``coupling``; else the allowed epoch of ``epochs`` (the
    group's analysed ones) nearest to where it was, or the lead's window; None when nothing is allowed."""
    if coupling_allows(coupling, {**kept, group: pick}):
        return pick
    lead_pick = kept[lead]
    if not isinstance(lead_pick, int) and coupling_allows(coupling, {**kept, group: lead_pick}):
        return lead_pick
    target = pick_centre(pick)
    allowed = [int(e) for e in epochs if coupling_allows(coupling, {**kept, group: int(e)})]
    if not allowed:
        return None
    return min(allowed, key=lambda e: (abs(e - target), abs(e - pick_centre(lead_pick)), e))


def apply_couplings(results: dict[str, GroupAnalysis], spec: Spec) -> list[str]:
    """Move coupled groups' picks so that every coupling holds; return notes."""
    notes = []
    for index, coupling in enumerate(spec.couplings):
        members = [g for g in coupling.groups if g in results]
        if len(members) < 2:
            continue
        name = coupling_name(coupling, index)
        lead = max(members, key=lambda g: (results[g].final.confidence, -members.index(g)))
        kept: dict[str, Pick] = {lead: results[lead].pick}
        lead_text = f"{lead} (the coupling's most confident pick, {pick_label(kept[lead])} at {results[lead].final.confidence:.0%})"
        for group in members:
            if group == lead:
                continue
            before = results[group].pick
            after = move_within_coupling(group, before, kept, coupling, lead, results[group].series.epochs.tolist())
            if after is None:
                note = (
                    f"kept at {pick_label(before)}, breaking coupling {name}: no analysed epoch of {group} lies"
                    f" within {coupling.max_epoch_gap} epochs of {lead_text}"
                )
                results[group].coupling_note = note
                notes.append(f"{group}: {note}")
                kept[group] = before
                continue
            kept[group] = after
            if after == before:
                continue
            note = (
                f"moved from {pick_label(before)} to {pick_label(after)}: coupling {name} keeps {group}"
                f" within {coupling.max_epoch_gap} epochs of {lead_text}"
            )
            results[group].pick = after
            results[group].coupling_note = note
            results[group].moved_by.append(name)
            notes.append(f"{group}: {note}")
    return notes
