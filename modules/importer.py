"""Import a run saved in another layout (the seed's ``checkpoint_epoch_<N>.pt``) into a run directory.

All inputs are checked before the first tensor is written, the run is written into a sibling
``<out>.partial-<pid>`` folder and renamed onto ``out`` only when everything succeeded.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from modules.checkpoint_io import (
    SKIP_BAD_ADVICE,
    is_zip_file,
    load_state_dict,
    without_skip_advice,
)
from modules.checkpoint_names import CHECKPOINT_RE, epoch_of_file  # noqa: F401 - re-exported
from modules.errors import CheckpointImportError, RunDirError, SpecError, UnsafeCheckpointError
from modules.rundir import MANIFEST_NAME, METRIC_COLUMNS, RunDir, RunWriter, TensorInfo, sync_tree
from modules.spec import MODEL_GROUP, Spec, dump_spec

METRICS_FILES = ("metrics.csv", "metrics.jsonl")
PARTIAL_SUFFIX = ".partial-"


@dataclass(frozen=True)
class SkippedFile:
    """A checkpoint left out by ``skip_bad``, with the reason."""

    path: str
    reason: str


@dataclass(frozen=True)
class MetricProblem:
    """Values of one metrics column that were kept as missing (NaN)."""

    file: str
    column: str
    kind: str  # "non-numeric" or "missing"
    epochs: list[int]
    examples: list[str] = field(default_factory=list)

    def describe(self) -> str:
        shown = ", ".join(repr(v) for v in self.examples)
        values = f" (values {shown})" if shown else ""
        return f"{self.file}: column {self.column!r} has {self.kind} values at epochs {self.epochs}{values}; kept as missing"


@dataclass
class ImportReport:
    """What an import did: epochs written, files skipped, metric values kept as missing."""

    source: str
    out: str
    epochs: list[int] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    metrics_file: str | None = None
    metric_rows: int = 0
    metric_problems: list[MetricProblem] = field(default_factory=list)
    #: Columns like ``backbon/grad_norm`` whose prefix looks like a misspelt group: (column, likely group).
    metric_near_groups: list[tuple[str, str]] = field(default_factory=list)
    #: Epochs of metrics rows with no checkpoint: stored, but the analysis reads checkpoint epochs only.
    metric_epochs_without_checkpoint: list[int] = field(default_factory=list)
    total_bytes: int = 0

    def summary(self) -> str:
        """A few lines for people: what was imported, what was skipped, what was missing."""
        lines = [f"imported {len(self.epochs)} epochs {self.epochs} from {self.source} into {self.out}"]
        for item in self.skipped:
            lines.append(f"skipped {item.path}: {item.reason}")
        if self.metrics_file:
            lines.append(f"metrics: {self.metric_rows} values from {self.metrics_file}")
        else:
            lines.append(f"metrics: none ({' or '.join(METRICS_FILES)} not found in {self.source})")
        lines.extend(problem.describe() for problem in self.metric_problems)
        for column, group in self.metric_near_groups:
            prefix, _, metric = column.partition("/")
            lines.append(
                f"{self.metrics_file}: column {column!r}: {prefix!r} is not a group of the spec but looks like"
                f" group {group!r}; it was imported as a whole-model metric. Rename the column to"
                f" '{group}/{metric}' (or fix the spec's group name) and import again to attach it to {group!r}"
            )
        orphans = self.metric_epochs_without_checkpoint
        if orphans:
            shown = ", ".join(map(str, orphans[:10])) + (f" and {len(orphans) - 10} more" if len(orphans) > 10 else "")
            lines.append(
                f"{self.metrics_file}: rows for {len(orphans)} epoch{'s' if len(orphans) != 1 else ''} without a"
                f" checkpoint ({shown}) are stored but not analysed: the analysis reads metrics at checkpoint"
                " epochs only"
            )
        return "\n".join(lines)


@dataclass
class _Checkpoint:
    epoch: int
    path: Path
    infos: dict[str, TensorInfo]
    state: dict[str, torch.Tensor] | None  # kept when memory-mapped (costs no memory), else re-read


def _is_memory_mapped(path: Path) -> bool:
    """Whether ``load_state_dict`` maps ``path`` lazily (zip-format .pt and safetensors) rather than reading it."""
    return path.suffix == ".safetensors" or is_zip_file(path)


def find_checkpoints(source_dir: Path) -> dict[int, Path]:
    """Map epoch -> checkpoint file in ``source_dir``; two files for one epoch is an error."""
    by_epoch: dict[int, list[Path]] = {}
    for path in source_dir.iterdir():
        epoch = epoch_of_file(path)
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
        raise CheckpointImportError(
            f"{source_dir} holds no checkpoints named checkpoint_epoch_<N>.pt (or .pth, .safetensors);"
            " point --from at the folder with the training run's checkpoints"
        )
    return {epoch: paths[0] for epoch, paths in sorted(by_epoch.items())}


def _scan(source: Path, paths: dict[int, Path], skip_bad: bool, report: ImportReport, progress: bool) -> list[_Checkpoint]:
    """Read every checkpoint's keys, shapes and dtypes (memory-mapped, no tensor data copied)."""
    found = []
    for epoch, path in tqdm(paths.items(), desc="checking", unit="file", disable=not progress):
        try:
            state = load_state_dict(path)
        except UnsafeCheckpointError:
            raise
        except CheckpointImportError as error:
            if not skip_bad:
                raise
            report.skipped.append(SkippedFile(str(path), without_skip_advice(str(error))))
            continue
        infos = {k: TensorInfo.of(t) for k, t in state.items()}
        found.append(_Checkpoint(epoch, path, infos, state if _is_memory_mapped(path) else None))
        del state
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
    out: str | os.PathLike[str],
    skip_bad: bool = False,
    progress: bool = True,
) -> ImportReport:
    """Import ``checkpoint_epoch_<N>.pt`` files and a wide metrics file into a new run directory."""
    source = Path(source_dir)
    out = Path(out)
    if not source.is_dir():
        raise CheckpointImportError(f"--from {source} is not a folder; pass the folder holding the checkpoints")
    _check_out(out)
    report = ImportReport(source=str(source), out=str(out))
    checkpoints = _scan(source, find_checkpoints(source), skip_bad, report, progress)
    _check_consistent(checkpoints)
    group_keys = _group_keys(spec, checkpoints[0])
    metrics = read_wide_metrics(source, spec, report)
    if metrics is not None:
        have = {item.epoch for item in checkpoints}
        report.metric_epochs_without_checkpoint = sorted({int(e) for e in metrics["epoch"]} - have)

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}{PARTIAL_SUFFIX}{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    try:
        writer = RunWriter.create(partial, spec.name, group_keys)
        writer.write_spec_text(dump_spec(spec))
        total = sum(item.path.stat().st_size for item in checkpoints)
        with tqdm(total=total, desc="importing", unit="B", unit_scale=True, disable=not progress) as bar:
            for item in checkpoints:
                state = item.state if item.state is not None else load_state_dict(item.path)
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
        # Epochs were written without fsync (the folder is invisible until the rename); one pass
        # makes every file and folder durable before the rename publishes them.
        sync_tree(partial)
        _check_out(out)
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _fsync_dir(out.parent)
    return report


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- metrics ----------------------------------------------------------------------------------


def read_wide_metrics(source: Path, spec: Spec, report: ImportReport) -> pd.DataFrame | None:
    """Read ``metrics.csv`` or ``metrics.jsonl`` (one row per epoch) into long form, or None if absent."""
    present = [source / name for name in METRICS_FILES if (source / name).is_file()]
    if not present:
        return None
    if len(present) > 1:
        raise CheckpointImportError(
            f"{source} holds both {present[0].name} and {present[1].name}; keep the one with the metrics"
            " of this run and move the other out of the folder"
        )
    path = present[0]
    rows = _read_csv_rows(path) if path.suffix == ".csv" else _read_jsonl_rows(path)
    report.metrics_file = str(path)
    frame = _to_long(rows, path, spec, report)
    report.metric_rows = int(frame["value"].notna().sum())
    return frame


def _read_csv_rows(path: Path) -> list[dict[str, object]]:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CheckpointImportError(
            f"{path} is not a readable CSV ({str(error).splitlines()[0]}); fix or remove the file"
        ) from None
    return frame.to_dict("records")


def _read_jsonl_rows(path: Path) -> list[dict[str, object]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise CheckpointImportError(
                    f"{path} line {number} is not valid JSON ({error}); fix or remove that line"
                ) from None
            if not isinstance(row, dict):
                raise CheckpointImportError(
                    f"{path} line {number} is a JSON {type(row).__name__}, not an object; write one"
                    " {\"epoch\": N, \"metric\": value, ...} object per line"
                )
            rows.append(row)
    return rows


def _parse_epoch(value: object, path: Path, row_number: int) -> int:
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number != int(number) or number < 0:
        raise CheckpointImportError(
            f"{path} row {row_number}: epoch {value!r} is not a non-negative whole number; fix the 'epoch' column"
        )
    return int(number)


def _parse_value(value: object) -> tuple[float, str | None]:
    """``(number, problem)``: problem is None, "missing" or "non-numeric"."""
    if value is None:
        return math.nan, "missing"
    if isinstance(value, bool):
        return math.nan, "non-numeric"
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        if value.strip() == "" or value.strip().lower() in ("nan", "na", "null", "none"):
            return math.nan, "missing"
        try:
            number = float(value)
        except ValueError:
            return math.nan, "non-numeric"
    else:
        return math.nan, "non-numeric"
    return (number, None) if not math.isnan(number) else (math.nan, "missing")


def _column_target(column: str, spec: Spec) -> tuple[str, str]:
    group, slash, metric = column.partition("/")
    if slash and metric and (group in spec.groups or group == MODEL_GROUP):
        return group, metric
    return MODEL_GROUP, column


def near_group(column: str, spec: Spec) -> str | None:
    """The group a ``prefix/metric`` column probably meant when ``prefix`` is a near miss of one
    (``backbon/grad_norm`` -> ``backbone``); None for exact groups and for names like ``val/loss``."""
    prefix, slash, metric = column.partition("/")
    if not slash or not metric or prefix in spec.groups or prefix == MODEL_GROUP:
        return None
    close = difflib.get_close_matches(prefix, [*spec.groups, MODEL_GROUP], n=1, cutoff=0.8)
    return close[0] if close else None


def _to_long(rows: list[dict[str, object]], path: Path, spec: Spec, report: ImportReport) -> pd.DataFrame:
    if not rows:
        raise CheckpointImportError(f"{path} holds no rows; remove it or write one row per epoch")
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    if "epoch" not in columns:
        raise CheckpointImportError(
            f"{path} has no 'epoch' column (columns: {columns[:10]}); add one giving each row's epoch"
        )
    epochs = [_parse_epoch(row.get("epoch"), path, number) for number, row in enumerate(rows, start=1)]
    repeated = sorted({e for e in epochs if epochs.count(e) > 1})
    if repeated:
        raise CheckpointImportError(
            f"{path} has more than one row for epochs {repeated}; keep one row per epoch"
        )
    out_rows: list[tuple[int, str, str, float]] = []
    targets: dict[tuple[str, str], str] = {}
    for column in columns:
        if column == "epoch":
            continue
        group, metric = _column_target(column, spec)
        if (likely := near_group(column, spec)) is not None:
            report.metric_near_groups.append((column, likely))
        if (group, metric) in targets:
            raise CheckpointImportError(
                f"{path}: columns {targets[group, metric]!r} and {column!r} both give metric {metric!r}"
                f" of group {group!r}; rename or drop one of them"
            )
        targets[group, metric] = column
        bad: dict[str, tuple[list[int], list[str]]] = {"non-numeric": ([], []), "missing": ([], [])}
        for epoch, row in zip(epochs, rows):
            number, problem = _parse_value(row.get(column))
            if problem is not None:
                bad[problem][0].append(epoch)
                if problem == "non-numeric" and len(bad[problem][1]) < 3:
                    bad[problem][1].append(str(row.get(column)))
            out_rows.append((epoch, group, metric, number))
        for kind, (bad_epochs, examples) in bad.items():
            if bad_epochs:
                report.metric_problems.append(MetricProblem(str(path), column, kind, bad_epochs, examples))
    return pd.DataFrame(out_rows, columns=METRIC_COLUMNS)


def open_run(
    source: str | os.PathLike[str], spec: Spec | None, scratch: str | os.PathLike[str], progress: bool = True
) -> RunDir:
    """The run directory at ``source``; a folder of ``checkpoint_epoch_<N>.pt`` files is imported
    on the fly into ``scratch/run`` (which the caller deletes), so every step accepts both."""
    source = Path(source)
    if not source.is_dir():
        raise RunDirError(f"--checkpoint-dir {source} is not a folder; pass a run directory or a checkpoint folder")
    if (source / MANIFEST_NAME).is_file():
        return RunDir(source)
    if not any(epoch_of_file(p) is not None for p in source.iterdir()):
        raise RunDirError(
            f"--checkpoint-dir {source} has neither {MANIFEST_NAME} (a run directory) nor"
            " checkpoint_epoch_<N>.pt files; pass a recorded run or the folder of your checkpoints"
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
        import_checkpoints(source, spec, target, skip_bad=False, progress=progress)
    except UnsafeCheckpointError:
        raise
    except CheckpointImportError as error:  # only `sweetspot import` has --skip-bad
        advice = f", or move it out of {source} (or import the rest with `sweetspot import --skip-bad`)"
        raise CheckpointImportError(str(error).replace(SKIP_BAD_ADVICE, advice)) from None
    return RunDir(target)
