"""The one coupling rule: how far apart the picks of coupled groups may lie.

A pick is an epoch or an averaged window ``(first, last)``; its centre is the epoch itself or the
window's midpoint ``(first + last) / 2``. A coupling holds when the centres of its groups' picks
lie within ``max_epoch_gap`` epochs of each other (the spread, largest minus smallest centre).
Groups of the coupling that the selection does not name are not checked.

The analysis keeps its picks within this rule, combine and evaluate warn when a selection breaks
it, and a search uses ``coupling_allows`` to tell whether a candidate is in its space. Every
function here is pure: no I/O, no warnings, no state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from modules.spec.schema import Coupling

#: An epoch, or an averaged window (first, last epoch).
Pick = int | tuple[int, int]


def pick_centre(pick: Pick) -> float:
    """``44`` -> 44.0; ``(42, 48)`` -> 45.0 (a window's midpoint)."""
    if isinstance(pick, int):
        return float(pick)
    first, last = pick
    return (first + last) / 2


def coupling_spread(coupling: Coupling, picks: Mapping[str, Pick]) -> float:
    """Largest minus smallest pick centre over the coupling's groups in ``picks`` (0 for fewer than two)."""
    centres = [pick_centre(picks[g]) for g in coupling.groups if g in picks]
    return max(centres) - min(centres) if len(centres) > 1 else 0.0


def coupling_allows(coupling: Coupling, picks: Mapping[str, Pick]) -> bool:
    """Whether ``picks`` (group -> epoch or window) keeps ``coupling``: centres within its ``max_epoch_gap``.

    Example: with ``max_epoch_gap`` 4, ``{"backbone": (10, 20), "heads": 18}`` is allowed (centres
    15 and 18), ``{"backbone": (10, 20), "heads": 20}`` is not (5 apart).
    """
    return coupling_spread(coupling, picks) <= coupling.max_epoch_gap


def coupling_name(coupling: Coupling, index: int) -> str:
    """The coupling's name, else ``couplings[<index>]`` as in the spec."""
    return coupling.name or f"couplings[{index}]"


def coupling_violations(picks: Mapping[str, Pick], couplings: Iterable[Coupling]) -> list[str]:
    """One sentence per coupling that ``picks`` breaks; empty when every coupling holds."""
    problems = []
    for index, coupling in enumerate(couplings):
        if coupling_allows(coupling, picks):
            continue
        chosen = ", ".join(f"{g} at {pick_centre(picks[g]):g}" for g in coupling.groups if g in picks)
        problems.append(
            f"coupling {coupling_name(coupling, index)} allows {coupling.max_epoch_gap} epochs between"
            f" its groups, but the selection puts {chosen} ({coupling_spread(coupling, picks):g} apart;"
            " an averaged window counts at its midpoint)"
        )
    return problems
