"""The automatic selection of one run within a counted evaluation budget.

In order, every selection scored on the run's validation split through one ``BudgetedScore``:
each checkpoint alone, the greedy soup built from them (Wortsman et al. 2022: the floor, never
given up), the candidates the caller adds (the thresholds' picks), the calibration's predicted
selection, then coordinate sweeps: each group in turn, most sensitive first, tries the epochs of
its calibrated good region (widened by ``MARGIN``) with the other groups fixed, nearest first and
with a share of the budget proportional to its sensitivity; then a polish of every group's
neighbours and averaging windows until nothing improves or the budget is spent. The selection
kept is the best scored, so it is never worse on validation than the greedy soup or any single
checkpoint. Nothing here imports Ray.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from modules.combine.soups import GreedySoup, greedy_soup
from modules.spec.couplings import coupling_allows
from modules.spec.schema import Coupling, loss_sign
from modules.spec.selection import EpochSet, selection_key
from search.calibration.calibration_file import GroupPrior, index_at, predicted_selection, window

#: Widening of each group's calibrated good region, as a fraction of training: trainings of one
#: model with other seeds put the best epochs a few checkpoints apart.
MARGIN = 0.1
#: Offsets (checkpoints) and averaging widths the polish tries around each group's choice.
POLISH_OFFSETS = (-1, 1)
#: Steps a sweep goes on in one direction without improving before it turns.
PATIENCE = 2
POLISH_WIDTHS = (3,)

SINGLE = "the best single epoch"
SOUP = "the greedy soup"
PREDICTED = "the calibration's prediction"
REFINED = "the refinement"


class BudgetedScore:
    """Scores selections through ``score`` at most ``budget`` times; a repeated selection is
    answered from memory and costs nothing; past the budget the answer is None."""

    def __init__(self, score: Callable[[EpochSet], float], budget: int) -> None:
        self._score = score
        self.budget = budget
        self.spent = 0
        self.values: dict[str, float] = {}

    @property
    def left(self) -> int:
        return self.budget - self.spent

    def __call__(self, epochs: Mapping[str, Sequence[int]]) -> float | None:
        key = selection_key(epochs)
        if key in self.values:
            return self.values[key]
        if self.spent >= self.budget:
            return None
        self.spent += 1
        value = float(self._score({g: sorted(int(e) for e in v) for g, v in epochs.items()}))
        self.values[key] = value
        return value


@dataclass
class AutoSelection:
    """What the automatic selection kept, where it came from, and what it cost."""

    selection: EpochSet
    value: float
    source: str
    evaluations: int
    budget: int
    soup: GreedySoup
    soup_complete: bool
    #: Validation objective of the named reference points (best single, greedy soup, candidates, prediction).
    references: dict[str, float] = field(default_factory=dict)
    reference_selections: dict[str, EpochSet] = field(default_factory=dict)
    improvements: int = 0


class _Best:
    def __init__(self, mode: str) -> None:
        self.sign = loss_sign(mode)
        self.selection: EpochSet = {}
        self.value = math.inf
        self.source = ""

    def offer(self, selection: EpochSet, value: float | None, source: str) -> bool:
        if value is None or not math.isfinite(value) or not self.sign * value < self.sign * self.value:
            return False
        self.selection, self.value, self.source = {g: list(v) for g, v in selection.items()}, value, source
        return True


class _Units:
    """Groups that move together (couplings with no epoch gap) and the other couplings' check."""

    def __init__(self, groups: list[str], couplings: Sequence[Coupling]) -> None:
        lead = {g: g for g in groups}

        def root(g: str) -> str:
            while lead[g] != g:
                g = lead[g]
            return g

        for coupling in couplings:
            members = [g for g in coupling.groups if g in lead]
            if coupling.max_epoch_gap == 0:
                for other in members[1:]:
                    lead[root(other)] = root(members[0])
        self.members: dict[str, list[str]] = {}
        for g in groups:
            self.members.setdefault(root(g), []).append(g)
        self.loose = [c for c in couplings if c.max_epoch_gap > 0]

    def move(self, selection: EpochSet, unit: str, chosen: list[int]) -> EpochSet | None:
        """``selection`` with ``unit``'s groups at ``chosen``; None when it breaks a coupling."""
        out = {**selection, **{g: list(chosen) for g in self.members[unit]}}
        picks = {g: v[0] if len(v) == 1 else (min(v), max(v)) for g, v in out.items()}
        return out if all(coupling_allows(c, picks) for c in self.loose) else None

    def prior(self, unit: str, priors: Mapping[str, GroupPrior]) -> GroupPrior:
        """The unit's lead's position and width, the hull of its members' regions, their summed sensitivity."""
        each = [priors[g] for g in self.members[unit]]
        return each[0].model_copy(update={
            "low": min(p.low for p in each), "high": max(p.high for p in each),
            "sensitivity": sum(p.sensitivity for p in each),
        })


def automatic_selection(
    score: BudgetedScore,
    epochs: Sequence[int],
    groups: Sequence[str],
    mode: str,
    priors: Mapping[str, GroupPrior] | None = None,
    candidates: Mapping[str, EpochSet] | None = None,
    couplings: Sequence[Coupling] = (),
) -> AutoSelection:
    """The best selection found with ``score``'s budget (see the module's docstring); selections
    that break one of ``couplings`` are never scored."""
    epochs, groups = list(epochs), list(groups)
    sign = loss_sign(mode)
    best = _Best(mode)
    singles: dict[int, float] = {}
    for epoch in epochs:
        value = score({g: [epoch] for g in groups})
        if value is not None:
            singles[epoch] = value
            best.offer({g: [epoch] for g in groups}, value, f"{SINGLE} ({epoch})")
    truncated = False

    def soup_objective(kept: list[int]) -> float:
        nonlocal truncated
        value = score({g: kept for g in groups})
        if value is None:
            truncated = True
            return sign * math.inf  # never kept: the soup stops growing where the budget ends
        return value

    soup = greedy_soup(singles, soup_objective, mode)
    soup_selection = {g: list(soup.epochs) for g in groups}
    references = {SINGLE: best.value, SOUP: soup.objective}
    reference_selections = {SINGLE: dict(best.selection), SOUP: soup_selection}
    best.offer(soup_selection, soup.objective, SOUP)
    for name, selection in (candidates or {}).items():
        value = score(selection)
        if value is not None:
            references[name], reference_selections[name] = value, selection
            best.offer(selection, value, name)
    improvements = 0
    if priors:
        units = _Units(groups, couplings)
        unit_priors = {u: units.prior(u, priors) for u in units.members}
        predicted: EpochSet | None = {}
        for unit, chosen in predicted_selection(unit_priors, epochs).items():
            predicted = units.move(predicted, unit, chosen) if predicted is not None else None
        value = score(predicted) if predicted is not None else None
        if predicted is not None and value is not None:
            references[PREDICTED], reference_selections[PREDICTED] = value, predicted
            best.offer(predicted, value, PREDICTED)
        while score.left > 0:
            found = _sweep(score, best, epochs, units, unit_priors) + _polish(score, best, epochs, units, unit_priors)
            improvements += found
            if not found:
                break
    return AutoSelection(
        best.selection, best.value, best.source, score.spent, score.budget, soup, not truncated, references,
        reference_selections, improvements,
    )


def _centre(selection: EpochSet, group: str, epochs: list[int]) -> int:
    indices = [epochs.index(e) for e in selection[group]]
    return int(round(sum(indices) / len(indices)))


def _sweep(score: BudgetedScore, best: _Best, epochs: list[int], units: _Units, priors: Mapping[str, GroupPrior]) -> int:
    """One pass over the units, most sensitive first: from each unit's choice, a walk outward in
    both directions inside its calibrated good region (widened by ``MARGIN``), each direction
    stopped after ``PATIENCE`` steps without improvement; a unit's share of what is left is in
    proportion to its sensitivity, and what a unit does not use passes on to the next."""
    order = sorted(priors, key=lambda u: -priors[u].sensitivity)
    n = len(epochs)
    improvements = 0
    for position, unit in enumerate(order):
        prior = priors[unit]
        rest = sum(priors[u].sensitivity for u in order[position:]) or 1.0
        cap = max(2, int(round(score.left * prior.sensitivity / rest)))
        low = index_at(max(0.0, prior.low - MARGIN), n)
        high = index_at(min(1.0, prior.high + MARGIN), n)
        tried = 0
        for direction in (-1, 1):
            misses, step = 0, 1
            start = _centre(best.selection, unit, epochs)
            while misses < PATIENCE and tried < cap and score.left > 0:
                index = start + direction * step
                step += 1
                if not low <= index <= high:
                    break
                selection = units.move(best.selection, unit, [epochs[index]])
                if selection is None or selection_key(selection) in score.values:
                    continue
                tried += 1
                if best.offer(selection, score(selection), REFINED):
                    improvements += 1
                    misses = 0
                else:
                    misses += 1
    return improvements


def _polish(score: BudgetedScore, best: _Best, epochs: list[int], units: _Units, priors: Mapping[str, GroupPrior]) -> int:
    """Neighbours and averaging windows of each unit's choice, until no change improves."""
    order = sorted(priors, key=lambda u: -priors[u].sensitivity)
    improvements = 0
    changed = True
    while changed and score.left > 0:
        changed = False
        for group in order:
            centre = _centre(best.selection, group, epochs)
            widths = sorted({priors[group].average, *POLISH_WIDTHS} - {1})
            options = [[epochs[centre + d]] for d in POLISH_OFFSETS if 0 <= centre + d < len(epochs)]
            options += [window(epochs, centre, w) for w in widths]
            for chosen in options:
                if score.left <= 0:
                    return improvements
                selection = units.move(best.selection, group, chosen)
                if selection is not None and best.offer(selection, score(selection), REFINED):
                    improvements += 1
                    changed = True
    return improvements


__all__ = ["AutoSelection", "BudgetedScore", "automatic_selection"]
