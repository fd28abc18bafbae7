"""``selection.json``: group -> epoch, or group -> {"average": [first, last]}."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Union

from pydantic import BaseModel, ConfigDict, RootModel, StrictInt, ValidationError, model_validator

from modules.atomic import write_json_atomic
from modules.errors import SweetspotError
from modules.spec.couplings import Pick
from modules.spec.couplings import coupling_violations as pick_violations
from modules.spec.schema import Coupling

#: A selection resolved against a run: group -> the recorded epochs averaged (one: a single epoch).
EpochSet = dict[str, list[int]]


def selection_key(epochs: Mapping[str, Iterable[int]]) -> str:
    """A canonical text for an epoch set: equal selections have equal keys (memo and cache key)."""
    return json.dumps({g: sorted(int(e) for e in epochs[g]) for g in sorted(epochs)}, separators=(",", ":"))



class SelectionError(SweetspotError, ValueError):
    """A selection names an unknown group, an unrecorded epoch or an empty window."""


class AverageWindow(BaseModel):
    """Average a group's weights over the recorded epochs in ``[first, last]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    average: tuple[int, int]

    @model_validator(mode="after")
    def _ordered(self) -> AverageWindow:
        first, last = self.average
        if first > last:
            raise ValueError(f"average window [{first}, {last}] must have first <= last")
        return self


class EpochList(BaseModel):
    """Average a group's weights over exactly these recorded epochs (a greedy soup's set)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    epochs: tuple[StrictInt, ...]

    @model_validator(mode="after")
    def _nonempty(self) -> EpochList:
        if not self.epochs:
            raise ValueError("an epoch set needs at least one epoch")
        if len(set(self.epochs)) != len(self.epochs):
            raise ValueError(f"epoch set {list(self.epochs)} repeats an epoch")
        return self


GroupChoice = Union[StrictInt, AverageWindow, EpochList]  # noqa: UP007 - pydantic reads this at runtime
#: Keys starting with this are annotations (e.g. a search's scores), not groups.
ANNOTATION_PREFIX = "_"


class Selection(RootModel[dict[str, GroupChoice]]):
    """The chosen epoch (or averaging window) of each group."""

    def choices(self) -> dict[str, GroupChoice]:
        return dict(self.root)

    def epochs_for(self, group: str, recorded: list[int]) -> list[int]:
        """Recorded epochs that make up ``group``'s choice; raises when none or not recorded."""
        choice = self.root[group]
        if isinstance(choice, int):
            if choice not in recorded:
                raise SelectionError(
                    f"group {group!r}: epoch {choice} was not recorded; recorded epochs: {recorded}"
                )
            return [choice]
        if isinstance(choice, EpochList):
            missing = [e for e in choice.epochs if e not in recorded]
            if missing:
                raise SelectionError(
                    f"group {group!r}: epochs {missing} of its epoch set were not recorded; recorded epochs: {recorded}"
                )
            return sorted(choice.epochs)
        first, last = choice.average
        inside = [e for e in recorded if first <= e <= last]
        if not inside:
            raise SelectionError(
                f"group {group!r}: average window [{first}, {last}] holds no recorded epoch;"
                f" recorded epochs: {recorded}"
            )
        return inside

    def check(self, groups: list[str], recorded: list[int]) -> None:
        """Every group named is known and every choice resolves to recorded epochs."""
        problems = []
        for group in self.root:
            if group not in groups:
                problems.append(f"unknown group {group!r}; the run's groups are {groups}")
                continue
            try:
                self.epochs_for(group, recorded)
            except SelectionError as error:
                problems.append(str(error))
        if problems:
            raise SelectionError("; ".join(problems))

    def to_json(self) -> dict[str, object]:
        return {g: _choice_json(c) for g, c in self.root.items()}


def _choice_json(choice: GroupChoice) -> object:
    if isinstance(choice, int):
        return choice
    if isinstance(choice, EpochList):
        return {"epochs": list(choice.epochs)}
    return {"average": list(choice.average)}


def choice_for_epochs(epochs: list[int], recorded: list[int]) -> GroupChoice:
    """The plainest choice for a set of recorded epochs: one epoch, a window, or the set itself."""
    chosen = sorted(set(epochs))
    if len(chosen) == 1:
        return chosen[0]
    if [e for e in recorded if chosen[0] <= e <= chosen[-1]] == chosen:
        return AverageWindow(average=(chosen[0], chosen[-1]))
    return EpochList(epochs=tuple(chosen))


def parse_selection(data: object, source: str = "<selection>") -> Selection:
    """Validate a selection mapping; errors name ``source``."""
    if not isinstance(data, dict):
        raise SelectionError(
            f"{source} must be a JSON object of group -> epoch or {{\"average\": [first, last]}},"
            f" got {type(data).__name__}"
        )
    data = {k: v for k, v in data.items() if not str(k).startswith(ANNOTATION_PREFIX)}
    try:
        return Selection.model_validate(data)
    except ValidationError as error:
        bad_groups = list(dict.fromkeys(str(e["loc"][0]) for e in error.errors() if e["loc"]))
        lines = []
        for group in bad_groups:
            value = data.get(group)
            ordered = [e["msg"] for e in error.errors() if e["loc"] and str(e["loc"][0]) == group and "first <= last" in e["msg"]]
            why = ordered[0].removeprefix("Value error, ") if ordered else (
                "it is neither an epoch (an integer), {\"average\": [first, last]} nor {\"epochs\": [e, ...]}"
            )
            lines.append(f"  group {group!r}: {json.dumps(value)}: {why}")
        raise SelectionError(
            f"{source} is not a valid selection (group -> epoch, or group -> {{\"average\": [first, last]}}):\n"
            + "\n".join(lines)
        ) from None


def load_selection(path: str | os.PathLike[str]) -> Selection:
    """Read and validate ``selection.json``."""
    path = Path(path)
    if not path.is_file():
        raise SelectionError(f"selection file {path} does not exist; run `sweetspot analyze` or name each group's epoch")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SelectionError(f"{path} is not valid JSON: {error}") from None
    return parse_selection(data, str(path))


def save_selection(selection: Selection, path: str | os.PathLike[str], index: str = "epoch") -> None:
    """Write ``selection.json`` atomically; a run indexed by training step says so in the
    annotation ``_index`` (its numbers are steps, not epochs; annotations are not groups)."""
    document = selection.to_json()
    if index != "epoch":
        document = {f"{ANNOTATION_PREFIX}index": index, **document}
    write_json_atomic(path, document)


def coupling_violations(epochs: Mapping[str, list[int]], couplings: Iterable[Coupling]) -> list[str]:
    """Couplings that a selection breaks, given each group's chosen epochs (a window's recorded epochs).

    The rule is ``modules.spec.couplings``' (pick centres within ``max_epoch_gap``; a window counts at
    its midpoint), the same one the analysis keeps its picks within.
    """
    picks: dict[str, Pick] = {g: (min(e), max(e)) if len(e) > 1 else int(e[0]) for g, e in epochs.items() if e}
    return pick_violations(picks, couplings)


#: The files ``sweetspot analyze`` writes its per-group picks into, in the order they are read.
ANALYSIS_METRICS_FILE = "module_metrics.json"
ANALYSIS_SELECTION_FILE = "selection.json"


def analysis_picks(folder: str | os.PathLike[str]) -> Selection:
    """The per-group picks in an analysis folder: ``module_metrics.json`` (groups.*.pick), else ``selection.json``."""
    folder = Path(folder)
    metrics_path = folder / ANALYSIS_METRICS_FILE
    if metrics_path.is_file():
        try:
            groups = json.loads(metrics_path.read_text(encoding="utf-8"))["groups"]
            picks = {g: v["pick"] for g, v in groups.items()}
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise SelectionError(
                f"{metrics_path} lacks groups.<group>.pick ({error!r}); re-run `sweetspot analyze`"
            ) from None
        return parse_selection(picks, f"{metrics_path} groups.*.pick")
    if (folder / ANALYSIS_SELECTION_FILE).is_file():
        return load_selection(folder / ANALYSIS_SELECTION_FILE)
    raise SelectionError(
        f"{folder} holds neither {ANALYSIS_METRICS_FILE} nor {ANALYSIS_SELECTION_FILE}; pass the folder"
        " `sweetspot analyze` wrote",
        param="analysis",
    )
