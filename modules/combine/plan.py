"""Planning a combine: which file each group's tensors come from, and which epochs are averaged.

Two forms: a run directory with a selection (group -> epoch or window), or whole-model checkpoint
files per group (the seed's ``checkpoint_epoch_<N>.pt``). Nothing is read beyond file headers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modules.combine.sources import CombinePlan, GroupPlan, SourceFile, open_source
from modules.errors import CombineError
from modules.importing.checkpoint_names import epoch_of_file
from modules.rundir.run_dir import RunDir, TensorInfo, sha256_file
from modules.spec.selection import AverageWindow, Selection, SelectionError, parse_selection

#: One path, or several to average.
FileChoice = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def selection_epochs(selection: Selection, run: RunDir) -> dict[str, list[int]]:
    """Resolve a selection against a run: group -> recorded epochs (all groups must be named)."""
    selection.check(run.groups, run.epochs)
    missing = [g for g in run.groups if g not in selection.root]
    if missing:
        raise SelectionError(
            f"the selection names no epoch for groups {missing}; name them, or give an analysis"
            " whose pick then fills the groups not named"
        )
    return {g: selection.epochs_for(g, run.epochs) for g in run.groups}


def plan_from_run(run: RunDir, epochs: Mapping[str, list[int]], choices: Mapping[str, Any] | None = None) -> CombinePlan:
    """Plan a combine over a run directory from group -> epochs to average (one epoch: a pick)."""
    unknown = [g for g in epochs if g not in run.groups]
    missing = [g for g in run.groups if g not in epochs]
    if unknown or missing:
        raise SelectionError(
            f"groups unknown {unknown}, not named {missing}; the run {run.label} has groups {run.groups}"
        )
    groups = []
    for group in run.groups:
        chosen = sorted(set(epochs[group]))
        bad = [e for e in chosen if e not in run.epochs]
        if not chosen or bad:
            raise SelectionError(
                f"group {group!r}: epochs {bad or chosen} not recorded in {run.label}; recorded epochs: {run.epochs}"
            )
        sources = tuple(_group_source(run, e, group) for e in chosen)
        groups.append(GroupPlan(group, run.tensor_infos(group), sources))
    if choices is None:
        choices = {g: (e[0] if len(e) == 1 else {"epochs": sorted(e)}) for g, e in epochs.items()}
    return CombinePlan(tuple(groups), dict(choices), run.path if run.is_local else run.location)


def _group_source(run: RunDir, epoch: int, group: str) -> SourceFile:
    sha = run.epoch_entry(epoch).files[group].sha256
    if run.is_local:
        return SourceFile(run.group_path(epoch, group), sha, epoch)
    return SourceFile(run.group_location(epoch, group), sha, epoch, run, group)


def plan_from_files(
    spec: Any,
    files: Mapping[str, str | os.PathLike[str] | Sequence[str | os.PathLike[str]]],
    default: str | os.PathLike[str] | None = None,
) -> CombinePlan:
    """Plan a combine over whole-model checkpoints: group -> file (or files to average), others from ``default``."""
    unknown = [g for g in files if g not in spec.groups]
    if unknown:
        raise CombineError(f"groups {unknown} are not in spec {spec.name!r}; its groups are {list(spec.groups)}")
    missing = [g for g in spec.groups if g not in files]
    if missing and default is None:
        raise CombineError(
            f"no checkpoint given for groups {missing}; name a file for each, or a default file"
            " for all groups not named"
        )
    chosen = {g: _paths(files.get(g, default)) for g in spec.groups}  # type: ignore[arg-type]
    infos_by_path: dict[Path, dict[str, dict[str, TensorInfo]]] = {}
    sha_by_path: dict[Path, str] = {}
    groups = []
    for group, paths in chosen.items():
        for path in paths:
            if path not in infos_by_path:
                infos_by_path[path] = _file_group_infos(spec, path)
                sha_by_path[path] = sha256_file(path)
        infos = infos_by_path[paths[0]][group]
        if not infos:
            raise CombineError(f"{paths[0]} holds no tensor of group {group!r} (patterns {spec.groups[group]}); pick a full-model checkpoint")
        groups.append(GroupPlan(group, infos, tuple(SourceFile(p, sha_by_path[p], epoch_of_file(p)) for p in paths)))
    choices = {g: str(p[0]) if len(p) == 1 else [str(x) for x in p] for g, p in chosen.items()}
    return CombinePlan(tuple(groups), choices, None)


def _paths(value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    if not value:
        raise CombineError("an average over checkpoint files needs at least one file")
    return [Path(v) for v in value]


def _file_group_infos(spec: Any, path: Path) -> dict[str, dict[str, TensorInfo]]:
    with open_source(path) as source:
        infos = {k: TensorInfo(tuple(shape), dtype) for k, (shape, dtype) in source.infos().items()}
    assigned = spec.assign_groups(infos)
    return {g: {k: infos[k] for k in keys} for g, keys in assigned.items()}




def resolve_selection(
    groups: Sequence[str], selection: Selection | Mapping[str, Any] | None, picks: Selection | None = None
) -> Selection:
    """``selection`` with the groups it does not name taken from ``picks`` (an analysis's selection)."""
    if isinstance(selection, Selection):
        choices: dict[str, Any] = selection.choices()
    else:
        choices = dict(selection or {})
    if picks is not None:
        for group in groups:
            if group not in choices and group in picks.root:
                choices[group] = picks.root[group]
    return parse_selection({g: (c.model_dump() if isinstance(c, AverageWindow) else c) for g, c in choices.items()})


def files_from_picks(
    spec: Any, files: Mapping[str, FileChoice], default: str | os.PathLike[str] | None, picks: Selection, source: str
) -> dict[str, Path | list[Path]]:
    """Seed form: groups without a file take ``checkpoint_epoch_<pick>`` from the folder of the named
    files (every checkpoint inside the window for an average pick); ``source`` names the picks."""
    named = next(iter(files.values()), default)
    if named is None:
        raise CombineError(f"to take the picks of {source} from checkpoint files, name at least one group's file")
    folder = Path(named if isinstance(named, (str, os.PathLike)) else named[0]).parent
    found = {e: p for p in folder.iterdir() if (e := epoch_of_file(p)) is not None}
    out: dict[str, Path | list[Path]] = {
        g: Path(v) if isinstance(v, (str, os.PathLike)) else [Path(p) for p in v] for g, v in files.items()
    }
    for group in spec.groups:
        choice = picks.root.get(group)
        if group in out or choice is None:
            continue
        if not isinstance(choice, int):
            first, last = choice.average
            window = [found[e] for e in sorted(found) if first <= e <= last]
            if not window:
                raise CombineError(
                    f"{source} averages group {group!r} over [{first}, {last}], but {folder} has no checkpoint"
                    f" in that window (epochs there: {sorted(found)}); name a file for group {group!r}"
                )
            out[group] = window
            continue
        if choice not in found:
            raise CombineError(
                f"{source} picks epoch {choice} for group {group!r}, but {folder} has no"
                f" checkpoint_epoch_{choice}.pt (epochs there: {sorted(found)}); name a file for group {group!r}"
            )
        out[group] = found[choice]
    return out
