"""Import a run saved in another layout (``checkpoint_epoch_<N>.pt``, Lightning's ``epoch=N-step=M.ckpt``,
or names matched by a user pattern) into a run directory.

All inputs are checked before the first tensor is written, the run is written into a sibling
``<out>.partial-<pid>`` folder and renamed onto ``out`` only when everything succeeded; the folder
is removed on every error, and one left by a killed import is removed by the next import to ``out``.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from modules.atomic import fsync_path, pid_alive
from modules.checkpoint_io import (
    SKIP_BAD_ADVICE,
    is_zip_file,
    read_checkpoint,
    without_skip_advice,
)
from modules.checkpoint_names import compile_patterns, describe_patterns, epoch_of_file
from modules.errors import CheckpointImportError, RunDirError, SpecError, UnsafeCheckpointError
from modules.import_report import METRICS_FILES, ImportReport, MetricProblem, SkippedFile
from modules.run_store import RunLocation, is_uri, run_store
from modules.rundir import MANIFEST_NAME, RunDir, RunWriter, TensorInfo, sync_tree
from modules.spec import Spec, dump_spec
from modules.wide_metrics import near_group, read_wide_metrics

__all__ = [
    "METRICS_FILES", "ImportReport", "MetricProblem", "SkippedFile", "epoch_of_file", "find_checkpoints",
    "import_checkpoints", "near_group", "open_run", "read_wide_metrics",
]

PARTIAL_SUFFIX = ".partial-"
#: A pattern: a regex with an ``epoch`` group or a ``{epoch}`` template; several are tried in turn.
Pattern = str | Sequence[str] | None


@dataclass
class _Checkpoint:
    epoch: int
    path: Path
    infos: dict[str, TensorInfo]
    state: dict[str, torch.Tensor] | None  # kept when memory-mapped (costs no memory), else re-read


def _is_memory_mapped(path: Path) -> bool:
    """Whether ``load_state_dict`` maps ``path`` lazily (zip-format .pt and safetensors) rather than reading it."""
    return path.suffix == ".safetensors" or is_zip_file(path)


def find_checkpoints(source_dir: Path, pattern: Pattern = None) -> dict[int, Path]:
    """Map epoch -> checkpoint file in ``source_dir`` (names matching ``pattern``, default: the seed's
    and Lightning's names); two files for one epoch is an error."""
    patterns = compile_patterns(pattern)
    by_epoch: dict[int, list[Path]] = {}
    for path in source_dir.iterdir():
        epoch = epoch_of_file(path, patterns)
        if epoch is not None and path.is_file():
            by_epoch.setdefault(epoch, []).append(path)
    duplicates = {e: sorted(p.name for p in paths) for e, paths in by_epoch.items() if len(paths) > 1}
    if duplicates:
        listed = "; ".join(f"epoch {e}: {names}" for e, names in sorted(duplicates.items()))
        raise CheckpointImportError(
            f"{source_dir} holds more than one checkpoint for the same epoch ({listed}); keep one file"
            " per epoch (move the others out of the folder) and import again"
        )
    if not by_epoch:
        names = sorted(p.name for p in source_dir.iterdir() if p.is_file())
        shown = f"; its files include {names[:5]}" if names else "; it holds no files"
        raise CheckpointImportError(
            f"{source_dir} holds no checkpoints named {describe_patterns(pattern)}{shown}. For other names pass"
            " a pattern (--pattern, or pattern= in the API): a template such as 'epoch_{epoch}.pt' or a regex"
            " with an epoch group such as 'model_e(?P<epoch>\\d+)\\.safetensors'"
        )
    return {epoch: paths[0] for epoch, paths in sorted(by_epoch.items())}


def _scan(
    source: Path, paths: dict[int, Path], skip_bad: bool, report: ImportReport, progress: bool, allow_globals: Iterable[str]
) -> list[_Checkpoint]:
    """Read every checkpoint's keys, shapes and dtypes (memory-mapped, no tensor data copied)."""
    found = []
    for epoch, path in tqdm(paths.items(), desc="checking", unit="file", disable=not progress):
        try:
            loaded = read_checkpoint(path, allow_globals)
        except UnsafeCheckpointError:
            raise
        except CheckpointImportError as error:
            if not skip_bad:
                raise
            report.skipped.append(SkippedFile(str(path), without_skip_advice(str(error))))
            continue
        state = loaded.state
        for name in loaded.skipped_globals:
            report.skipped_globals.setdefault(name, []).append(path.name)
        infos = {k: TensorInfo.of(t) for k, t in state.items()}
        found.append(_Checkpoint(epoch, path, infos, state if _is_memory_mapped(path) else None))
        del state, loaded
    if not found:
        raise CheckpointImportError(
            f"no readable checkpoint in {source}: all {len(paths)} files were skipped as unreadable;"
            " restore them from a backup"
        )
    return found


def _check_consistent(checkpoints: list[_Checkpoint]) -> None:
    """Every epoch holds the reference epoch's keys with the same shapes and dtypes."""
    reference = checkpoints[0]
    problems = []
    for item in checkpoints[1:]:
        missing = [k for k in reference.infos if k not in item.infos]
        extra = [k for k in item.infos if k not in reference.infos]
        if missing:
            problems.append(
                f"{item.path} (epoch {item.epoch}) lacks {len(missing)} keys {missing[:10]} that"
                f" {reference.path.name} (epoch {reference.epoch}, the reference) has"
            )
        if extra:
            problems.append(
                f"{item.path} (epoch {item.epoch}) has {len(extra)} keys {extra[:10]} that"
                f" {reference.path.name} (epoch {reference.epoch}, the reference) lacks"
            )
        for key, info in item.infos.items():
            ref = reference.infos.get(key)
            if ref is not None and ref != info:
                problems.append(
                    f"{item.path} (epoch {item.epoch}) key {key!r} is {list(info.shape)} {info.dtype} but"
                    f" {list(ref.shape)} {ref.dtype} in {reference.path.name} (epoch {reference.epoch}, the reference)"
                )
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise CheckpointImportError(
            "checkpoints do not all hold the same model:\n  " + "\n  ".join(shown)
            + "\nEvery epoch must have the same keys, shapes and dtypes; move the odd files out of the"
            " folder (or re-save them from the same model) and import again"
        )


def _group_keys(spec: Spec, reference: _Checkpoint) -> dict[str, list[str]]:
    """The spec's groups with the reference checkpoint's keys; empty groups are a spec error."""
    try:
        assigned = spec.assign_groups(reference.infos)
    except SpecError as error:
        raise SpecError(f"{reference.path}: {error}") from None
    empty = [group for group, keys in assigned.items() if not keys]
    if empty:
        raise SpecError(
            f"spec {spec.name!r}: groups {empty} match no key of {reference.path}; fix their patterns"
            f" or remove them (example keys: {list(reference.infos)[:8]})"
        )
    return assigned


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointImportError(
            f"--out {out} already exists and is not an empty folder; choose a new path or delete it first"
        )


def import_checkpoints(
    source_dir: str | os.PathLike[str],
    spec: Spec,
    out: RunLocation,
    skip_bad: bool = False,
    progress: bool = True,
    pattern: Pattern = None,
    allow_globals: Iterable[str] = (),
) -> ImportReport:
    """Import a folder of per-epoch checkpoints and a wide metrics file into a new run directory.

    ``pattern`` picks the checkpoint files and their epochs by name (see ``modules.checkpoint_names``);
    by default ``checkpoint_epoch_<N>.pt`` (.pth, .safetensors) and Lightning's ``epoch=<N>-step=<M>.ckpt``.
    Non-tensor extras in a checkpoint are left out and listed in the report; ``allow_globals``
    (``"module.name"``) are loaded for real, so name only types you trust.
    """
    source = Path(source_dir)
    remote = is_uri(out) or isinstance(out, tuple)
    out = out if remote else Path(out)
    if not source.is_dir():
        raise CheckpointImportError(f"--from {source} is not a folder; pass the folder holding the checkpoints")
    if not remote:
        _check_out(out)
    allow_globals = tuple(allow_globals)
    report = ImportReport(source=str(source), out=str(out if not remote else run_store(out).location))
    checkpoints = _scan(source, find_checkpoints(source, pattern), skip_bad, report, progress, allow_globals)
    _check_consistent(checkpoints)
    group_keys = _group_keys(spec, checkpoints[0])
    metrics = read_wide_metrics(source, spec, report)
    if metrics is not None:
        have = {item.epoch for item in checkpoints}
        report.metric_epochs_without_checkpoint = sorted({int(e) for e in metrics["epoch"]} - have)
    if remote:  # object storage has no folder rename: each epoch exists once the manifest lists it
        try:
            writer = RunWriter.create(out, spec.name, group_keys)
        except RunDirError as error:
            raise CheckpointImportError(f"--out {error}; choose a new path or delete it first") from None
        _write_run(writer, checkpoints, group_keys, metrics, spec, report, progress, allow_globals)
        return report

    out.parent.mkdir(parents=True, exist_ok=True)
    report.removed_leftovers = _remove_stale_partials(out)
    partial = out.with_name(f"{out.name}{PARTIAL_SUFFIX}{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    try:
        writer = RunWriter.create(partial, spec.name, group_keys)
        _write_run(writer, checkpoints, group_keys, metrics, spec, report, progress, allow_globals)
        # Epochs were written without fsync (the folder is invisible until the rename); one pass
        # makes every file and folder durable before the rename publishes them.
        sync_tree(partial)
        _check_out(out)
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    fsync_path(out.parent)
    return report


def _write_run(
    writer: RunWriter,
    checkpoints: list[_Checkpoint],
    group_keys: dict[str, list[str]],
    metrics: pd.DataFrame | None,
    spec: Spec,
    report: ImportReport,
    progress: bool,
    allow_globals: tuple[str, ...],
) -> None:
    """The spec, every checkpoint as an epoch, and the metrics, into a new run."""
    writer.write_spec_text(dump_spec(spec))
    total = sum(item.path.stat().st_size for item in checkpoints)
    with tqdm(total=total, desc="importing", unit="B", unit_scale=True, disable=not progress) as bar:
        for item in checkpoints:
            state = item.state if item.state is not None else read_checkpoint(item.path, allow_globals).state
            item.state = None
            writer.write_epoch(
                item.epoch,
                {group: {key: state[key] for key in keys} for group, keys in group_keys.items()},
                source=item.path.name,
                durable=False,
            )
            del state
            report.epochs.append(item.epoch)
            bar.update(item.path.stat().st_size)
    report.total_bytes = total
    if metrics is not None:
        writer.write_metrics(metrics)


def _remove_stale_partials(out: Path) -> list[str]:
    """Remove ``<out>.partial-<pid>`` folders of imports that were killed (their process is gone)."""
    removed = []
    for candidate in out.parent.glob(f"{glob.escape(out.name)}{PARTIAL_SUFFIX}*"):
        pid = candidate.name[len(out.name) + len(PARTIAL_SUFFIX) :]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(str(candidate))
    return sorted(removed)


def open_run(
    source: str | os.PathLike[str],
    spec: Spec | None,
    scratch: str | os.PathLike[str],
    progress: bool = True,
    pattern: Pattern = None,
) -> RunDir:
    """The run directory at ``source``; a folder of checkpoints (names as for ``import_checkpoints``)
    is imported on the fly into ``scratch/run`` (which the caller deletes), so every step accepts both.
    A URI (``s3://bucket/run``) or a ``(FileSystem, root)`` pair is opened as a run directory."""
    if is_uri(source) or isinstance(source, tuple):
        return RunDir(source)
    source = Path(source)
    if not source.is_dir():
        raise RunDirError(f"--checkpoint-dir {source} is not a folder; pass a run directory or a checkpoint folder")
    if (source / MANIFEST_NAME).is_file():
        return RunDir(source)
    patterns = compile_patterns(pattern)
    if not any(epoch_of_file(p, patterns) is not None for p in source.iterdir()):
        raise RunDirError(
            f"--checkpoint-dir {source} has neither {MANIFEST_NAME} (a run directory) nor checkpoints named"
            f" {describe_patterns(pattern)}; pass a recorded run or the folder of your checkpoints"
            " (import other names with `sweetspot import --pattern`)"
        )
    if spec is None:
        raise RunDirError(
            f"--checkpoint-dir {source} holds checkpoint_epoch_<N>.pt files, which are imported on the fly;"
            " pass --spec sweetspot.yaml to say which parameters form which group"
        )
    if progress:
        print(f"importing {source} into a temporary run directory", file=sys.stderr)
    target = Path(scratch) / "run"
    try:
        import_checkpoints(source, spec, target, skip_bad=False, progress=progress, pattern=pattern)
    except UnsafeCheckpointError:
        raise
    except CheckpointImportError as error:  # only `sweetspot import` has --skip-bad
        advice = f", or move it out of {source} (or import the rest with `sweetspot import --skip-bad`)"
        raise CheckpointImportError(str(error).replace(SKIP_BAD_ADVICE, advice)) from None
    return RunDir(target)
