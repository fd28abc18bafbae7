"""Soups as search algorithms: the global greedy soup, and module soups (a greedy soup per unit
with the other units fixed, swept over the units).

Module soup sweeps run every unit's greedy pass side by side (one trial in flight per unit, all
against the state at the sweep's start), then try the merged result: parallel trials on the same
pool and evaluators, no generation barrier inside a unit's pass.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from modules.combine.soups import GreedySoupSteps
from modules.spec.schema import is_better, loss_sign
from search.algorithms.base import Algorithm, Proposal, Scored, TrialState
from search.algorithms.space import EpochSet, Unit

SINGLE = "single epoch"
#: The origin of a greedy-soup trial: a candidate soup, kept only if it improved (the kept soup is the
#: search's baselines["greedy soup"]).
GREEDY = "greedy soup candidate"


def ranked_epochs(singles: dict[int, float], mode: str) -> list[int]:
    """Recorded epochs from best to worst single-checkpoint objective."""
    sign = loss_sign(mode)
    return sorted(singles, key=lambda e: (sign * singles[e], e))


def greedy_soup_of(scored: Iterable[Scored], mode: str) -> Scored | None:
    """The greedy soup a search scored: the best of its single epochs and its soup trials. A soup
    trial better than every single epoch was kept; when none was, the soup is that single epoch."""
    best = None
    for item in scored:
        if item.origin in (SINGLE, GREEDY) and (best is None or is_better(item.value, best.value, mode)):
            best = item
    return best


class GreedySoupSearch(Algorithm):
    """The greedy soup of ``modules.combine.soups`` as search trials, one candidate at a time."""

    name = "greedy-soup"

    def setup(self) -> None:
        self.steps: GreedySoupSteps | None = None
        self._waiting = False

    def warm_start(self, scored: list[Scored]) -> None:
        singles = {int(s.epochs[self.space.groups[0]][0]): s.value for s in scored if s.origin == SINGLE}
        self.steps = GreedySoupSteps(singles, self.mode) if singles else None

    def ask(self) -> Proposal | None:
        candidate = None if self._waiting or self.steps is None else self.steps.candidate()
        if candidate is None:
            return None
        self._waiting = True
        return Proposal({g: list(candidate) for g in self.space.groups}, GREEDY, extra={"candidate": self.steps.todo[0]})

    def tell(self, proposal: Proposal, value: float | None, state: TrialState) -> None:
        self._waiting = False
        assert self.steps is not None
        self.steps.record(value)

    @property
    def finished(self) -> bool:
        return not self._waiting and (self.steps is None or self.steps.candidate() is None)

    def result(self) -> EpochSet:
        kept = self.steps.result().epochs if self.steps is not None else []
        return {g: list(kept) for g in self.space.groups}


class _Stream:
    """One unit's greedy pass in a sweep: try its ranked epochs one at a time."""

    def __init__(self, unit: Unit, soup: list[int], todo: list[int], value: float) -> None:
        self.unit = unit
        self.soup = list(soup)
        self.todo = [e for e in todo if e not in soup]
        self.best = value
        self.waiting = False
        self.improved = False


class ModuleSoupParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Passes over the units (each pass: every unit's greedy soup, then their merge).
    sweeps: int = Field(3, ge=1, le=20)


class ModuleSoup(Algorithm):
    """Per unit, a greedy soup over its candidate epochs with the other units fixed."""

    name = "module-soup"
    Params = ModuleSoupParams
    follows_soup = True
    finite = True

    def setup(self) -> None:
        self.max_sweeps = self.params.sweeps
        self.sweep = 0
        self.state: EpochSet = {}
        self.value: float | None = None
        self.ranked: list[int] = []
        self.streams: list[_Stream] = []
        self._merge: EpochSet | None = None
        self._merge_pending = False
        self._done = False

    def warm_start(self, scored: list[Scored]) -> None:
        first = self.space.groups[0]
        singles = {int(s.epochs[first][0]): s.value for s in scored if s.origin == SINGLE}
        self.ranked = ranked_epochs(singles, self.mode)
        best = greedy_soup_of(scored, self.mode)
        if best is None:
            self._done = True
            return
        self.state = {g: sorted(best.epochs[g]) for g in self.space.groups}
        self.value = best.value
        self._begin_sweep()

    def _begin_sweep(self) -> None:
        if self.sweep >= self.max_sweeps or self.value is None:
            self._done = True
            return
        self.sweep += 1
        self.streams = []
        for unit in self.space.units:
            order = [e for e in self.ranked if e in unit.candidates]
            self.streams.append(_Stream(unit, self.state[unit.lead], order, self.value))
        self._merge = None
        self._merge_pending = False

    def _with(self, unit: Unit, epochs: list[int]) -> EpochSet:
        out = {g: list(v) for g, v in self.state.items()}
        for group in unit.groups:
            out[group] = sorted(epochs)
        return out

    def ask(self) -> Proposal | None:
        if self._done:
            return None
        for index, stream in enumerate(self.streams):
            if not stream.waiting and stream.todo:
                stream.waiting = True
                candidate = stream.todo[0]
                epochs = self._with(stream.unit, stream.soup + [candidate])
                return Proposal(epochs, self.name, extra={"stream": index, "sweep": self.sweep})
        if any(s.waiting or s.todo for s in self.streams) or self._merge_pending:
            return None
        improved = [s for s in self.streams if s.improved]
        if len(improved) > 1 and self._merge is None:
            merged = {g: list(v) for g, v in self.state.items()}
            for stream in improved:
                for group in stream.unit.groups:
                    merged[group] = sorted(stream.soup)
            self._merge = merged
            self._merge_pending = True
            return Proposal(merged, self.name, extra={"merge": True, "sweep": self.sweep})
        self._finish_sweep(None)
        return self.ask()

    def tell(self, proposal: Proposal, value: float | None, state: TrialState) -> None:
        if proposal.extra.get("sweep") != self.sweep:
            return
        if proposal.extra.get("merge"):
            self._merge_pending = False
            self._finish_sweep(value)
            return
        stream = self.streams[proposal.extra["stream"]]
        stream.waiting = False
        candidate = stream.todo.pop(0)
        if value is not None and self.better(value, stream.best):
            stream.soup = sorted(stream.soup + [candidate])
            stream.best = value
            stream.improved = True

    def _finish_sweep(self, merged_value: float | None) -> None:
        improved = [s for s in self.streams if s.improved]
        if not improved:
            self._done = True
            return
        best_stream = improved[0]
        for stream in improved[1:]:
            if self.better(stream.best, best_stream.best):
                best_stream = stream
        assert self.value is not None
        if merged_value is not None and self._merge is not None and self.better(merged_value, best_stream.best):
            self.state, self.value = self._merge, merged_value
        else:
            self.state = self._with(best_stream.unit, best_stream.soup)
            self.value = best_stream.best
        self._begin_sweep()

    @property
    def finished(self) -> bool:
        return self._done
