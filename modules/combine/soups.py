"""Weight sets for baselines: uniform soup, LAWA, plateau average and greedy soup, as epoch sets.

An epoch set maps each group to the recorded epochs averaged for it; ``modules.combine.combine`` builds
the weights from it group by group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from modules.errors import CombineError
from modules.rundir.run_dir import RunDir

EpochSet = dict[str, list[int]]


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


def greedy_soup(
    single_objectives: Mapping[int, float],
    soup_objective: Callable[[list[int]], float],
    mode: str = "min",
) -> GreedySoup:
    """Greedy soup (Wortsman et al. 2022): checkpoints sorted by validation objective, each added
    to the running average only if the soup's validation objective strictly improves."""
    if not single_objectives:
        raise CombineError("greedy soup needs at least one evaluated checkpoint")
    sign = 1.0 if mode == "min" else -1.0
    ranked = sorted(single_objectives, key=lambda e: (sign * single_objectives[e], e))
    kept = [ranked[0]]
    best = single_objectives[ranked[0]]
    soup = GreedySoup(kept, best, [(ranked[0], best, True)])
    for epoch in ranked[1:]:
        value = soup_objective(sorted(kept + [epoch]))
        better = sign * value < sign * best
        soup.steps.append((epoch, value, better))
        if better:
            kept.append(epoch)
            best = value
    soup.epochs = sorted(kept)
    soup.objective = best
    return soup
