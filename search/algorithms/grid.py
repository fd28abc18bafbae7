"""Grid: every distinct selection of a small space, once."""

from __future__ import annotations

from search.algorithms.base import Algorithm, Proposal, TrialState
from search.errors import SearchError

#: A grid larger than this is refused: use a sampler instead.
MAX_GRID = 100_000


class Grid(Algorithm):
    name = "grid"
    takes_baselines = False  # every selection is scored anyway
    finite = True

    def setup(self) -> None:
        space = self.space
        if space.size() > MAX_GRID:
            raise SearchError(
                f"--algo grid would enumerate {space.size():,} parameter combinations (more than"
                f" {MAX_GRID:,}); use --algo tpe, or narrow the space with --candidates analysis"
            )
        self._todo = space.enumerate()

    def ask(self) -> Proposal | None:
        if not self._todo:
            return None
        epochs = self._todo.pop(0)
        return Proposal(epochs, self.name, self.space.encode(epochs))

    def tell(self, proposal: Proposal, value: float | None, state: TrialState) -> None:
        return None

    @property
    def finished(self) -> bool:
        return not self._todo
