"""Weight sets for baselines: uniform soup, LAWA, plateau average and greedy soup, as epoch sets.

An epoch set maps each group to the recorded epochs averaged for it; ``modules.combine.combine`` builds
the weights from it group by group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from modules.errors import CombineError
from modules.rundir.run_dir import RunDir
from modules.spec.schema import is_better, loss_sign
from modules.spec.selection import EpochSet


def same_epochs(run: RunDir, epochs: list[int]) -> EpochSet:
    """Every group averaged over the same ``epochs``."""
    return {g: list(epochs) for g in run.groups}


def uniform_soup(run: RunDir) -> EpochSet:
    """All recorded checkpoints averaged (Wortsman et al. 2022's uniform soup)."""
    return same_epochs(run, run.epochs)


def lawa(run: RunDir, last: int = 5) -> EpochSet:
    """Latest weight averaging (Kaddour 2022): the last ``last`` checkpoints averaged."""
    if last < 1:
        raise CombineError(f"LAWA needs at least one checkpoint, got last={last}")
    return same_epochs(run, run.epochs[-last:])


def plateau_average(
    run: RunDir, windows: Mapping[str, tuple[int, int] | None], fallback: Mapping[str, list[int]]
) -> tuple[EpochSet, list[str]]:
    """Each group averaged over its plateau window; a group without one takes ``fallback[group]`` epochs.

    Returns the epoch set and notes naming the groups that fell back.
    """
    out: EpochSet = {}
    notes = []
    for group in run.groups:
        window = windows.get(group)
        inside = [e for e in run.epochs if window and window[0] <= e <= window[1]]
        if inside:
            out[group] = inside
            continue
        if group not in fallback:
            raise CombineError(f"group {group!r} has no plateau window and no fallback epoch; re-run the analysis")
        out[group] = list(fallback[group])
        notes.append(f"{group}: no plateau found, used its pick {fallback[group]}")
    return out, notes


@dataclass
class GreedySoup:
    """The epochs kept, and each step: (epoch tried, validation objective of the candidate, kept)."""

    epochs: list[int]
    objective: float
    steps: list[tuple[int, float, bool]] = field(default_factory=list)


class GreedySoupSteps:
    """Greedy soup (Wortsman et al. 2022) one step at a time: checkpoints sorted by validation
    objective, each added to the running average only if the soup's objective strictly improves.
    ``candidate()`` is the next soup to score (None when done), ``record(value)`` its objective
    (None: it could not be scored, and the checkpoint is not added)."""

    def __init__(self, single_objectives: Mapping[int, float], mode: str = "min") -> None:
        if not single_objectives:
            raise CombineError("greedy soup needs at least one evaluated checkpoint")
        self.mode = mode
        ranked = sorted(single_objectives, key=lambda e: (loss_sign(mode) * single_objectives[e], e))
        self.kept = [ranked[0]]
        self.objective = single_objectives[ranked[0]]
        self.todo = ranked[1:]
        self.steps: list[tuple[int, float, bool]] = [(ranked[0], self.objective, True)]

    def candidate(self) -> list[int] | None:
        return sorted([*self.kept, self.todo[0]]) if self.todo else None

    def record(self, value: float | None) -> bool:
        epoch = self.todo.pop(0)
        better = value is not None and is_better(value, self.objective, self.mode)
        self.steps.append((epoch, math.nan if value is None else value, better))
        if better:
            self.kept.append(epoch)
            self.objective = value  # type: ignore[assignment]
        return better

    def result(self) -> GreedySoup:
        return GreedySoup(sorted(self.kept), self.objective, list(self.steps))


def greedy_soup(
    single_objectives: Mapping[int, float],
    soup_objective: Callable[[list[int]], float],
    mode: str = "min",
) -> GreedySoup:
    """The greedy soup of checkpoints scored ``single_objectives``, scoring soups with ``soup_objective``."""
    steps = GreedySoupSteps(single_objectives, mode)
    while (candidate := steps.candidate()) is not None:
        steps.record(soup_objective(candidate))
    return steps.result()
