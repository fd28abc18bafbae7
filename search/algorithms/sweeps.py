"""Coordinate sweeps: from the best selection scored so far, each unit in turn tries every candidate
epoch with the other units fixed, and the incumbent moves after each unit.

Finite (``passes`` passes over the units), so it opens a chain (``--algo sweeps+tpe``): on a
landscape that is nearly separable by unit a sweep finds most of the gain in a few dozen trials, and
the sampler after it learns every one of them (``benchmarks/bench_search_quality.py``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from search.algorithms.base import Algorithm, Proposal, Scored, TrialState
from search.algorithms.space import EpochSet, selection_key


class SweepsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Passes over the units.
    passes: int = Field(1, ge=1, le=10)


class CoordinateSweeps(Algorithm):
    """One unit at a time, every candidate epoch of it; the best so far is the next unit's start."""

    name = "sweeps"
    Params = SweepsParams
    finite = True

    def setup(self) -> None:
        self.best: tuple[float, EpochSet] | None = None
        self.seen: set[str] = set()
        self.todo: list[EpochSet] = []
        self.open = 0
        self.unit = 0
        self.passes_done = 0
        self._starting = False

    def _consider(self, epochs: EpochSet, value: float) -> None:
        self.seen.add(selection_key(epochs))
        if self.space.encode(epochs) is None:  # an average outside the space: not a start for a sweep
            return
        if self.best is None or self.better(value, self.best[0]):
            self.best = (value, {g: list(v) for g, v in epochs.items()})

    def warm_start(self, scored: list[Scored]) -> None:
        for item in scored:
            self._consider(item.epochs, item.value)

    def _plan(self) -> bool:
        """The next unit's variants in ``todo``; False when every pass is done."""
        if self.passes_done >= self.params.passes:
            return False
        if self.best is None:  # nothing the space can express scored yet: each unit's last candidate
            if self._starting:
                return False  # the start failed to score
            self._starting = True
            self.todo = [{g: [unit.candidates[-1]] for unit in self.space.units for g in unit.groups}]
            return True
        unit = self.space.units[self.unit]
        for epoch in unit.candidates:
            epochs = {g: list(v) for g, v in self.best[1].items()}
            for group in unit.groups:
                epochs[group] = [epoch]
            if selection_key(epochs) not in self.seen:
                self.seen.add(selection_key(epochs))
                self.todo.append(epochs)
        self.unit += 1
        if self.unit == len(self.space.units):
            self.unit, self.passes_done = 0, self.passes_done + 1
        return True

    def ask(self) -> Proposal | None:
        while not self.todo:
            if self.open or not self._plan():
                return None
        self.open += 1
        epochs = self.todo.pop(0)
        return Proposal(epochs, self.name, self.space.encode(epochs))  # params: a late result still reaches a sampler

    def tell(self, proposal: Proposal, value: float | None, state: TrialState) -> None:
        self.open -= 1
        if state == "complete" and value is not None:
            self._consider(proposal.epochs, value)

    def late_result(self, proposal: Proposal, value: float) -> None:
        self._consider(proposal.epochs, value)

    @property
    def finished(self) -> bool:
        return not self.todo and not self.open and (
            self.passes_done >= self.params.passes or (self.best is None and self._starting)
        )
