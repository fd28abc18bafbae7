"""Phases in order: fixed points first (the analysis pick, the last epoch, every single epoch),
then the global greedy soup, then the chosen algorithm, warm-started with all that was scored."""

from __future__ import annotations

from search.algorithms.base import Algorithm, Proposal, Scored, TrialState
from search.algorithms.space import CrossoverSpace


class Points(Algorithm):
    """A fixed list of selections, all proposed at once (they run in parallel)."""

    name = "points"

    def __init__(self, space: CrossoverSpace, mode: str, seed: int, points: list[Proposal]) -> None:
        super().__init__(space, mode, seed)
        self._todo = list(points)
        self._open = 0

    def ask(self) -> Proposal | None:
        if not self._todo:
            return None
        self._open += 1
        return self._todo.pop(0)

    def tell(self, proposal: Proposal, value: float | None, state: TrialState) -> None:
        self._open -= 1

    @property
    def finished(self) -> bool:
        return not self._todo and self._open <= 0


class Together(Algorithm):
    """A sequential ``lead`` (the greedy soup) and a ``sampler`` side by side: the sampler fills
    the workers the lead leaves idle, and learns each of the lead's results as it arrives."""

    name = "together"

    def __init__(self, space: CrossoverSpace, mode: str, seed: int, lead: Algorithm, sampler: Algorithm) -> None:
        super().__init__(space, mode, seed)
        self.lead = lead
        self.sampler = sampler

    def warm_start(self, scored: list[Scored]) -> None:
        self.lead.warm_start(scored)
        self.sampler.warm_start(scored)

    def ask(self) -> Proposal | None:
        proposal = self.lead.ask()
        if proposal is not None:
            proposal.extra["lead"] = True
            return proposal
        return self.sampler.ask()

    def tell(self, proposal: Proposal, value: float | None, state: TrialState) -> None:
        if not proposal.extra.get("lead"):
            self.sampler.tell(proposal, value, state)
            return
        self.lead.tell(proposal, value, state)
        params = self.space.encode(proposal.epochs)
        if value is not None and state == "complete" and params is not None:
            self.sampler.late_result(Proposal(proposal.epochs, proposal.origin, params), value)

    def late_result(self, proposal: Proposal, value: float) -> None:
        self.sampler.late_result(proposal, value)

    @property
    def finished(self) -> bool:
        return self.lead.finished and self.sampler.finished


class Staged(Algorithm):
    """Run ``phases`` one after the other; each starts once every trial of the one before ended."""

    name = "staged"
    #: Where a proposal records the phase that asked (a chain inside the search's phases has its own).
    PHASE_KEY = "phase"

    def __init__(self, space: CrossoverSpace, mode: str, seed: int, phases: list[Algorithm]) -> None:
        super().__init__(space, mode, seed)
        self.phases = list(phases)
        self.current = 0
        self.scored: list[Scored] = []

    def ask(self) -> Proposal | None:
        while self.current < len(self.phases):
            phase = self.phases[self.current]
            proposal = phase.ask()
            if proposal is not None:
                proposal.extra[self.PHASE_KEY] = self.current
                return proposal
            if not phase.finished:
                return None
            self.current += 1
            if self.current < len(self.phases):
                self.phases[self.current].warm_start(list(self.scored))
        return None

    def tell(self, proposal: Proposal, value: float | None, state: TrialState) -> None:
        if value is not None and state == "complete":
            self.scored.append(Scored(proposal.epochs, value, proposal.origin))
        # The phase that asked: a phase may call itself finished (e.g. a grid with nothing left to
        # propose) while one of its proposals still runs, and the next phase has started then.
        self.phases[proposal.extra.get(self.PHASE_KEY, min(self.current, len(self.phases) - 1))].tell(proposal, value, state)

    def late_result(self, proposal: Proposal, value: float) -> None:
        self.scored.append(Scored(proposal.epochs, value, proposal.origin))
        self.phases[-1].late_result(proposal, value)

    @property
    def finished(self) -> bool:
        return self.current >= len(self.phases) or (
            self.current == len(self.phases) - 1 and self.phases[-1].finished
        )
