"""Import a run saved in another layout (see ``modules.importing.layouts``: the seed's ``checkpoint_epoch_<N>.pt``,
the Hugging Face Trainer's ``checkpoint-<step>/``, Lightning's ``epoch=<e>-step=<s>.ckpt``,
torch.distributed.checkpoint folders, or names matched by a user pattern) into a run directory.

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
from modules.errors import CheckpointImportError, RunDirError, SpecError, UnsafeCheckpointError
from modules.importing.checkpoint_io import SKIP_BAD_ADVICE, without_skip_advice
from modules.importing.checkpoint_names import epoch_of_file
from modules.importing.layouts import (
    CheckpointEntry,
    ImportPlan,
    LayoutOptions,
    choose_layout,
    detect_layouts,
    no_layout_message,
)
from modules.importing.report import METRICS_FILES, ImportReport, MetricProblem, SkippedFile
from modules.importing.wide_metrics import near_group, read_wide_metrics
from modules.rundir.run_dir import MANIFEST_NAME, RunDir, RunWriter, TensorInfo, sync_tree
from modules.rundir.store import RunLocation, is_uri, run_store
from modules.spec.schema import Spec, dump_spec

__all__ = [
    "METRICS_FILES", "ImportReport", "MetricProblem", "SkippedFile", "epoch_of_file", "import_checkpoints",
    "near_group", "open_run", "read_wide_metrics",
]

PARTIAL_SUFFIX = ".partial-"
#: A pattern: a regex with an ``epoch`` group or a ``{epoch}`` template; several are tried in turn.
Pattern = str | Sequence[str] | None


@dataclass
class _Checkpoint:
    epoch: int  # the run's index: an epoch, or a step for a run indexed by step
    path: Path
    entry: CheckpointEntry
    infos: dict[str, TensorInfo]
    state: dict[str, torch.Tensor] | None  # kept when memory-mapped (costs no memory), else re-read


def _strip(state: dict[str, torch.Tensor], prefix: str | None, report: ImportReport) -> dict[str, torch.Tensor]:
    """Keys under ``prefix`` without it (``model.encoder.weight`` -> ``encoder.weight``); the other
    keys (a LightningModule's loss buffers, DCP's optimizer state) are left out and counted."""
    if not prefix:
        return state
    kept = {key[len(prefix) :]: tensor for key, tensor in state.items() if key.startswith(prefix)}
    left_out = [key for key in state if not key.startswith(prefix)]
    report.left_out_keys = list(dict.fromkeys(report.left_out_keys + left_out))
    return kept


def _read(item: CheckpointEntry, strip_prefix: str | None, report: ImportReport) -> tuple[dict[str, torch.Tensor], list[str]]:
    loaded = item.read()
    state = _strip(loaded.state, strip_prefix, report)
    if not state:
        raise CheckpointImportError(
            f"{item.path} holds no key starting with --strip-prefix {strip_prefix!r} (keys such as"
            f" {list(loaded.state)[:5]}); pass the prefix its model keys start with"
        )
    return state, loaded.skipped_globals


def _scan(
    source: Path, plan: ImportPlan, skip_bad: bool, report: ImportReport, progress: bool, strip_prefix: str | None
) -> list[_Checkpoint]:
    """Read every checkpoint's keys, shapes and dtypes (memory-mapped where the format allows)."""
    found = []
    for item in tqdm(plan.checkpoints, desc="checking", unit="file", disable=not progress):
        try:
            state, skipped_globals = _read(item, strip_prefix, report)
        except UnsafeCheckpointError:
            raise
        except CheckpointImportError as error:
            if not skip_bad:
                raise
            report.skipped.append(SkippedFile(str(item.path), without_skip_advice(str(error))))
            continue
        for name in skipped_globals:
            report.skipped_globals.setdefault(name, []).append(item.path.name)
        infos = {k: TensorInfo.of(t) for k, t in state.items()}
        found.append(_Checkpoint(item.index, item.path, item, infos, state if item.memory_mapped else None))
        del state
    if not found:
        raise CheckpointImportError(
            f"no readable checkpoint in {source}: all {len(plan.checkpoints)} were skipped as unreadable;"
            " restore them from a backup"
        )
    return found


def _check_consistent(checkpoints: list[_Checkpoint], index: str = "epoch") -> None:
    """Every epoch (or step) holds the reference's keys with the same shapes and dtypes."""
    reference = checkpoints[0]
    problems = []
    for item in checkpoints[1:]:
        missing = [k for k in reference.infos if k not in item.infos]
        extra = [k for k in item.infos if k not in reference.infos]
        if missing:
            problems.append(
                f"{item.path} ({index} {item.epoch}) lacks {len(missing)} keys {missing[:10]} that"
                f" {reference.path.name} ({index} {reference.epoch}, the reference) has"
            )
        if extra:
            problems.append(
                f"{item.path} ({index} {item.epoch}) has {len(extra)} keys {extra[:10]} that"
                f" {reference.path.name} ({index} {reference.epoch}, the reference) lacks"
            )
        for key, info in item.infos.items():
            ref = reference.infos.get(key)
            if ref is not None and ref != info:
                problems.append(
                    f"{item.path} ({index} {item.epoch}) key {key!r} is {list(info.shape)} {info.dtype} but"
                    f" {list(ref.shape)} {ref.dtype} in {reference.path.name} ({index} {reference.epoch}, the reference)"
                )
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise CheckpointImportError(
            "checkpoints do not all hold the same model:\n  " + "\n  ".join(shown)
            + f"\nEvery {index} must have the same keys, shapes and dtypes; move the odd files out of the"
            " folder (or re-save them from the same model) and import again"
        )


def _group_keys(spec: Spec, reference: _Checkpoint) -> dict[str, list[str]]:
    """The spec's groups with the reference checkpoint's keys; empty groups are a spec error."""
    try:
        assigned = spec.assign_groups(reference.infos)
    except SpecError as error:
        raise SpecError(f"{reference.path}: {error}{_prefix_hint(reference.infos)}") from None
    empty = [group for group, keys in assigned.items() if not keys]
    if empty:
        raise SpecError(
            f"spec {spec.name!r}: groups {empty} match no key of {reference.path}; fix their patterns"
            f" or remove them (example keys: {list(reference.infos)[:8]}){_prefix_hint(reference.infos)}"
        )
    return assigned


def _prefix_hint(keys: Iterable[str]) -> str:
    """Advice to strip a first name all keys share (a LightningModule's ``model.``, DCP's ``model.``)."""
    firsts = {key.split(".", 1)[0] for key in keys if "." in key}
    if len(firsts) == 1:
        return f". All keys start with {next(iter(firsts)) + '.'!r}: pass --strip-prefix {next(iter(firsts))}. to drop it"
    return ""


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
    layout: str | None = None,
    strip_prefix: str | None = None,
) -> ImportReport:
    """Import a training run's checkpoints and metrics into a new run directory.

    ``layout`` names the layout (``modules.importing.layouts.LAYOUTS``: seed, hf-trainer, lightning, dcp,
    pattern); by default it is detected from the folder. ``pattern`` picks checkpoint files by
    name (see ``modules.importing.checkpoint_names``). ``strip_prefix`` (``"model."``) keeps only the keys
    under it, without it. Non-tensor extras in a checkpoint are left out and listed in the report;
    ``allow_globals`` (``"module.name"``) are loaded for real, so name only types you trust.
    """
    source = Path(source_dir)
    remote = is_uri(out) or isinstance(out, tuple)
    out = out if remote else Path(out)
    if not source.is_dir():
        raise CheckpointImportError(f"--from {source} is not a folder; pass the folder holding the checkpoints")
    if not remote:
        _check_out(out)
    options = LayoutOptions(
        pattern=pattern if pattern is None or isinstance(pattern, str) else tuple(pattern),
        allow_globals=tuple(allow_globals),
    )
    chosen = choose_layout(source, layout, pattern)
    plan = chosen.plan(source, options)
    report = ImportReport(
        source=str(source), out=str(out if not remote else run_store(out).location),
        layout=plan.layout, index=plan.index, notes=list(plan.notes),
    )
    checkpoints = _scan(source, plan, skip_bad, report, progress, strip_prefix)
    _check_consistent(checkpoints, plan.index)
    group_keys = _group_keys(spec, checkpoints[0])
    metrics = plan.metrics(spec, report)
    if metrics is not None:
        have = {item.epoch for item in checkpoints}
        report.metric_epochs_without_checkpoint = sorted({int(e) for e in metrics["epoch"]} - have)
    if remote:  # object storage has no folder rename: each epoch exists once the manifest lists it
        try:
            writer = RunWriter.create(out, spec.name, group_keys, index=plan.index)
        except RunDirError as error:
            raise CheckpointImportError(f"--out {error}; choose a new path or delete it first") from None
        _write_run(writer, checkpoints, group_keys, metrics, spec, report, progress, strip_prefix)
        return report

    out.parent.mkdir(parents=True, exist_ok=True)
    report.removed_leftovers = _remove_stale_partials(out)
    partial = out.with_name(f"{out.name}{PARTIAL_SUFFIX}{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    try:
        writer = RunWriter.create(partial, spec.name, group_keys, index=plan.index)
        _write_run(writer, checkpoints, group_keys, metrics, spec, report, progress, strip_prefix)
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
    strip_prefix: str | None,
) -> None:
    """The spec, every checkpoint as an epoch, and the metrics, into a new run."""
    writer.write_spec_text(dump_spec(spec))
    total = sum(item.entry.nbytes for item in checkpoints)
    with tqdm(total=total, desc="importing", unit="B", unit_scale=True, disable=not progress) as bar:
        for item in checkpoints:
            state = item.state if item.state is not None else _read(item.entry, strip_prefix, report)[0]
            item.state = None
            writer.write_epoch(
                item.epoch,
                {group: {key: state[key] for key in keys} for group, keys in group_keys.items()},
                source=item.path.name,
                durable=False,
            )
            del state
            report.epochs.append(item.epoch)
            bar.update(item.entry.nbytes)
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
    found = detect_layouts(source) if pattern is None else {"pattern": "files matching --pattern"}
    if not found:
        looked = no_layout_message(source).split("It looked for:", 1)[1]
        raise RunDirError(
            f"--checkpoint-dir {source} has neither {MANIFEST_NAME} (a run directory) nor checkpoints in a"
            f" layout sweetspot reads; pass a recorded run or the folder of your checkpoints. It looked for:{looked}"
        )
    if spec is None:
        raise RunDirError(
            f"--checkpoint-dir {source} holds checkpoints ({'; '.join(found.values())}), which are imported on"
            " the fly; pass --spec sweetspot.yaml to say which parameters form which group"
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
