"""Algorithms one after the other: ``--algo sweeps+tpe`` runs coordinate sweeps, then TPE.

Each member starts once the one before it has finished and its trials have ended, and learns every
selection scored before it: the baselines, the analysis pick and what the members before it found
(the module soup's result, the sweeps' best). Every member but the last must end by itself.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from search.algorithms.base import Algorithm, NoParams, Proposal, Scored, check_params
from search.algorithms.staged import Staged
from search.errors import SearchError

SEPARATOR = "+"


def members_of(name: str, registry: dict[str, type[Algorithm]]) -> list[type[Algorithm]]:
    """The registered algorithms ``name`` chains (one for a plain name); a bad chain names the fix."""
    names = name.split(SEPARATOR)
    unknown = [n for n in names if n not in registry]
    if unknown or not all(names):
        raise SearchError(f"--algo {name!r}: unknown algorithm {unknown[0] if unknown and unknown[0] else name!r}; choose one of {sorted(registry)}"
                          f" or chain them with {SEPARATOR!r} (e.g. sweeps{SEPARATOR}tpe)")
    classes = [registry[n] for n in names]
    endless = [c.name for c in classes[:-1] if not c.finite]
    if endless:
        raise SearchError(
            f"--algo {name}: {endless[0]} never ends by itself, so nothing after it would run; only the last"
            f" member of a chain may be one of {sorted(n for n, c in registry.items() if not c.finite)}"
        )
    later = [c.name for c in classes[1:] if c.follows_soup]
    if later:
        raise SearchError(
            f"--algo {name}: {later[0]} starts from the greedy soup, so it can only come first in a chain"
        )
    if any(not c.takes_baselines for c in classes[1:]) or (len(classes) > 1 and not classes[0].takes_baselines):
        raise SearchError(f"--algo {name}: {[c.name for c in classes if not c.takes_baselines][0]} cannot be chained")
    return classes


def split_params(classes: list[type[Algorithm]], params: dict[str, Any], name: str) -> list[BaseModel]:
    """Each member's typed settings: a setting goes to every member that has it."""
    known = {field for c in classes for field in c.Params.model_fields}
    unknown = sorted(set(params) - known)
    if unknown:
        raise SearchError(f"--algo {name} settings: {unknown[0]!r} is a setting of no member (their settings: {sorted(known) or 'none'})")
    return [check_params(c, {k: v for k, v in params.items() if k in c.Params.model_fields}) for c in classes]


class Chain(Staged):
    """``members`` in order, as phases; built by ``search.algorithms.build`` from ``a+b``."""

    Params = NoParams
    PHASE_KEY = "chain phase"  # its own: the search's Staged marks the same proposals with "phase"

    def __init__(self, members: list[Algorithm]) -> None:
        self.members = members
        first = members[0]
        self.name = SEPARATOR.join(m.name for m in members)  # type: ignore[misc]
        self.takes_baselines = first.takes_baselines  # type: ignore[misc]
        self.follows_soup = first.follows_soup  # type: ignore[misc]
        self.params = NoParams()
        self.space = None  # type: ignore[assignment]

    def bind(self, space: Any, mode: str, seed: int) -> Chain:
        for member in self.members:
            member.bind(space, mode, seed)
        Staged.__init__(self, space, mode, seed, self.members)
        return self

    def warm_start(self, scored: list[Scored]) -> None:
        self.scored = list(scored)
        self.phases[0].warm_start(list(scored))

    def late_result(self, proposal: Proposal, value: float) -> None:
        self.scored.append(Scored(proposal.epochs, value, proposal.origin))
        self.phases[min(self.current, len(self.phases) - 1)].late_result(proposal, value)
