"""The crossover search space: one integer per coupling unit (and optional window half-widths).

A *unit* is a group, or the groups of one coupling. Its lead group takes a candidate epoch by
index; with ``max_epoch_gap`` 0 every member takes the same choice, otherwise each follower takes
an offset within the gap. With averages, a unit also takes a half-width ``h``: the lead averages
the ``2h + 1`` recorded checkpoints around its epoch. Integers, not categoricals, so CMA-ES and
GP model the order of epochs. Decoding always yields a selection that satisfies the couplings.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from optuna.distributions import BaseDistribution, IntDistribution

from modules.spec import Spec

EpochSet = dict[str, list[int]]


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
    def followers(self) -> tuple[str, ...]:
        return self.groups[1:] if self.gap > 0 else ()


def selection_key(epochs: Mapping[str, Sequence[int]]) -> str:
    """A canonical text for an epoch set: equal selections have equal keys (the memo's key)."""
    return json.dumps({g: sorted(int(e) for e in epochs[g]) for g in sorted(epochs)}, separators=(",", ":"))


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
            for follower in unit.followers:
                out[f"{follower}.offset"] = IntDistribution(-unit.gap, unit.gap)
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
        """The epoch set a config stands for; followers are kept within their coupling's gap."""
        out: EpochSet = {}
        for unit in self.units:
            epoch = unit.candidates[int(params[unit.name])]
            half = int(params.get(f"{unit.name}.half_width", 0))
            lead = window_around(self.recorded, epoch, half)
            for group in unit.groups:
                if group in unit.followers:
                    out[group] = self._follower(lead, epoch, half, int(params[f"{group}.offset"]), unit.gap)
                else:
                    out[group] = list(lead)
        return out

    def _follower(self, lead: list[int], epoch: int, half: int, offset: int, gap: int) -> list[int]:
        allowed = [e for e in self.recorded if epoch - gap <= e <= epoch + gap]
        centre = min(allowed, key=lambda e: (abs(e - (epoch + offset)), e))
        low, high = lead[0] - gap, lead[-1] + gap
        return [e for e in window_around(self.recorded, centre, half) if low <= e <= high]

    def encode(self, epochs: Mapping[str, Sequence[int]]) -> dict[str, int] | None:
        """The config that decodes to ``epochs``, or None when the space cannot express it."""
        params: dict[str, int] = {}
        for unit in self.units:
            lead = sorted(epochs[unit.lead])
            centre = lead[len(lead) // 2]
            if centre not in unit.candidates or len(lead) % 2 == 0:
                return None
            params[unit.name] = unit.candidates.index(centre)
            if self.max_half_width > 0:
                params[f"{unit.name}.half_width"] = len(lead) // 2
            for follower in unit.followers:
                chosen = sorted(epochs[follower])
                params[f"{follower}.offset"] = max(-unit.gap, min(unit.gap, chosen[len(chosen) // 2] - centre))
        try:
            decoded = self.decode(params)
        except (ValueError, IndexError):
            return None
        return params if selection_key(decoded) == selection_key(epochs) else None

    def same_epoch(self, epoch: int) -> EpochSet:
        """Every group at one recorded epoch (a single-checkpoint baseline)."""
        return {g: [epoch] for g in self.groups}


def nearest_index(values: Sequence[int], target: float) -> int:
    """Index of the value closest to ``target`` in sorted ``values`` (the earlier on a tie)."""
    position = bisect.bisect_left(values, target)
    if position == 0:
        return 0
    if position == len(values):
        return len(values) - 1
    return position - 1 if target - values[position - 1] <= values[position] - target else position
