"""The crossover search space: one integer per coupling unit (and optional window half-widths).

A *unit* is a group, or the groups of one coupling. It takes a candidate epoch by index; with
``max_epoch_gap`` 0 every member takes that choice, otherwise that epoch is the lowest centre and
each member takes an offset in ``[0, gap]`` above it, so the centres lie within the gap (the one
coupling rule, ``modules.spec.couplings``). With averages, a unit also takes a half-width ``h``: each
member averages the ``2h + 1`` recorded checkpoints around its epoch. Integers, not categoricals,
so CMA-ES and GP model the order of epochs. Decoding always yields a selection that keeps the
couplings.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from optuna.distributions import BaseDistribution, IntDistribution

from modules.spec.couplings import coupling_allows
from modules.spec.schema import Coupling, Spec
from modules.spec.selection import EpochSet, selection_key


class SpaceError(ValueError):
    """The space cannot be built: unknown group, no candidates, or a single point."""


@dataclass(frozen=True)
class Unit:
    """Groups chosen together: the lead's epoch index, followers' offsets, one half-width."""

    name: str
    groups: tuple[str, ...]
    gap: int
    candidates: tuple[int, ...]

    @property
    def lead(self) -> str:
        return self.groups[0]

    @property
    def offsets(self) -> tuple[str, ...]:
        """Members that take an offset above the unit's epoch (all of them, when the gap is > 0)."""
        return self.groups if self.gap > 0 and len(self.groups) > 1 else ()

    def coupling(self) -> Coupling:
        return Coupling(name=self.name, groups=list(self.groups), max_epoch_gap=self.gap)


def window_around(recorded: Sequence[int], epoch: int, half_width: int) -> list[int]:
    """The recorded epochs from ``half_width`` checkpoints before ``epoch`` to as many after."""
    index = recorded.index(epoch)
    return list(recorded[max(0, index - half_width) : index + half_width + 1])


class CrossoverSpace:
    """Map integer configs to epoch sets (group -> recorded epochs averaged) and back."""

    def __init__(
        self,
        recorded: Sequence[int],
        units: Sequence[Unit],
        max_half_width: int = 0,
    ) -> None:
        self.recorded = sorted(int(e) for e in recorded)
        self.units = list(units)
        self.max_half_width = int(max_half_width)
        self.groups = [g for unit in self.units for g in unit.groups]

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        spec: Spec,
        groups: Sequence[str],
        recorded: Sequence[int],
        candidates: Mapping[str, Sequence[int]] | None = None,
        max_half_width: int = 0,
    ) -> CrossoverSpace:
        """Units from the spec's couplings over ``groups``; ``candidates`` narrows each group's epochs."""
        recorded = sorted(int(e) for e in recorded)
        if len(recorded) < 2:
            raise SpaceError(f"the run has {len(recorded)} recorded epoch(s); a search needs at least two")
        units, taken = [], set()
        for index, coupling in enumerate(spec.couplings):
            unknown = [g for g in coupling.groups if g not in groups]
            if unknown:
                raise SpaceError(
                    f"coupling {coupling.name or f'couplings[{index}]'} names {unknown}, which the run"
                    f" does not record (its groups: {list(groups)}); fix the spec's couplings"
                )
            members = tuple(coupling.groups)
            units.append(cls._unit(coupling.name or members[0], members, coupling.max_epoch_gap, recorded, candidates))
            taken.update(members)
        for group in groups:
            if group not in taken:
                units.append(cls._unit(group, (group,), 0, recorded, candidates))
        names = [u.name for u in units]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise SpaceError(
                f"coupling name(s) {clash} are also the names of groups outside the coupling; rename the"
                " coupling in the spec (its name labels the search parameter)"
            )
        space = cls(recorded, units, max_half_width)
        if space.size() < 2:
            raise SpaceError(
                "the search space holds a single selection (every group has one candidate epoch and no"
                " averaging); widen it with --candidates all or --include-averages"
            )
        return space

    @staticmethod
    def _unit(
        name: str,
        members: tuple[str, ...],
        gap: int,
        recorded: list[int],
        candidates: Mapping[str, Sequence[int]] | None,
    ) -> Unit:
        if candidates is None:
            chosen = list(recorded)
        else:
            chosen = sorted({int(e) for g in members for e in candidates.get(g, recorded) if int(e) in recorded})
        if not chosen:
            raise SpaceError(f"groups {list(members)} have no candidate epoch among the recorded {recorded}")
        return Unit(str(name), members, int(gap), tuple(chosen))

    # -- the Optuna / Tune view -------------------------------------------------------------

    def distributions(self) -> dict[str, BaseDistribution]:
        """One ``IntDistribution`` per parameter (what OptunaSearch and GridSampler take)."""
        out: dict[str, BaseDistribution] = {}
        for unit in self.units:
            out[unit.name] = IntDistribution(0, len(unit.candidates) - 1)
            for member in unit.offsets:
                out[f"{member}.offset"] = IntDistribution(0, unit.gap)
            if self.max_half_width > 0:
                out[f"{unit.name}.half_width"] = IntDistribution(0, self.max_half_width)
        return out

    def grid(self) -> dict[str, list[int]]:
        """Every value of every parameter (GridSampler's search space)."""
        return {name: list(range(d.low, d.high + 1)) for name, d in self.distributions().items()}  # type: ignore[attr-defined]

    def size(self) -> int:
        """The number of parameter combinations (distinct selections may be fewer)."""
        return math.prod(len(values) for values in self.grid().values())

    def enumerate(self) -> list[EpochSet]:
        """Every distinct selection of the space, in grid order (small spaces only)."""
        grid = self.grid()
        seen: dict[str, EpochSet] = {}
        for values in itertools.product(*grid.values()):
            epochs = self.decode(dict(zip(grid, values)))
            seen.setdefault(selection_key(epochs), epochs)
        return list(seen.values())

    # -- decoding and encoding ----------------------------------------------------------------

    def decode(self, params: Mapping[str, int]) -> EpochSet:
        """The epoch set a config stands for; coupled groups always keep their coupling."""
        out: EpochSet = {}
        for unit in self.units:
            epoch = unit.candidates[int(params[unit.name])]
            half = int(params.get(f"{unit.name}.half_width", 0))
            if not unit.offsets:
                for group in unit.groups:
                    out[group] = window_around(self.recorded, epoch, half)
                continue
            allowed = [e for e in self.recorded if epoch <= e <= epoch + unit.gap]
            centres = {
                g: min(allowed, key=lambda e, g=g: (abs(e - (epoch + int(params[f"{g}.offset"]))), e))
                for g in unit.groups
            }
            windows = {g: window_around(self.recorded, c, half) for g, c in centres.items()}
            picks = {g: (w[0], w[-1]) if len(w) > 1 else w[0] for g, w in windows.items()}
            if not coupling_allows(unit.coupling(), picks):  # windows cut short at the run's ends
                windows = {g: [c] for g, c in centres.items()}
            out.update(windows)
        return out

    def encode(self, epochs: Mapping[str, Sequence[int]]) -> dict[str, int] | None:
        """The config that decodes to ``epochs``, or None when the space cannot express it."""
        params: dict[str, int] = {}
        for unit in self.units:
            found = {g: self._centre_and_half(sorted(epochs[g])) for g in unit.groups}
            if any(v is None for v in found.values()) or len({h for _, h in found.values()}) > 1:  # type: ignore[misc]
                return None
            centres = {g: v[0] for g, v in found.items()}  # type: ignore[index]
            half = found[unit.lead][1]  # type: ignore[index]
            base = min(centres.values()) if unit.offsets else centres[unit.lead]
            if base not in unit.candidates:
                return None
            params[unit.name] = unit.candidates.index(base)
            if self.max_half_width > 0:
                params[f"{unit.name}.half_width"] = half
            for member in unit.offsets:
                if centres[member] - base > unit.gap:
                    return None
                params[f"{member}.offset"] = centres[member] - base
        try:
            decoded = self.decode(params)
        except (ValueError, IndexError):
            return None
        return params if selection_key(decoded) == selection_key(epochs) else None

    def _centre_and_half(self, window: list[int]) -> tuple[int, int] | None:
        """An epoch and half-width whose window is ``window`` (None when no such pair exists)."""
        for half in range(self.max_half_width + 1):
            for epoch in window:
                if epoch in self.recorded and window_around(self.recorded, epoch, half) == window:
                    return epoch, half
        return None

    def same_epoch(self, epoch: int) -> EpochSet:
        """Every group at one recorded epoch (a single-checkpoint baseline)."""
        return {g: [epoch] for g in self.groups}
