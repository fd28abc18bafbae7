"""Wide metrics files (``metrics.csv`` / ``metrics.jsonl``, one row per epoch) read into long form."""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path

import pandas as pd

from modules.errors import CheckpointImportError
from modules.importing.report import METRICS_FILES, ImportReport, MetricProblem
from modules.rundir.names import METRIC_COLUMNS
from modules.spec.schema import MODEL_GROUP, Spec


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


def _parse_epoch(value: object, path: Path, row_number: int, key: str = "epoch") -> int:
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number != int(number) or number < 0:
        raise CheckpointImportError(
            f"{path} row {row_number}: {key} {value!r} is not a non-negative whole number; fix the {key!r} column"
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


def column_target(column: str, spec: Spec) -> tuple[str, str]:
    """``(group, metric)`` of a column: ``<group>/<metric>`` goes to that group, any other name to ``model``."""
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
    # A run indexed by step (see modules.importing.layouts) may name its index column "step".
    key = "epoch" if "epoch" in columns or "step" not in columns else "step"
    if key not in columns:
        raise CheckpointImportError(
            f"{path} has no 'epoch' column (columns: {columns[:10]}); add one giving each row's epoch"
        )
    epochs = [_parse_epoch(row.get(key), path, number, key) for number, row in enumerate(rows, start=1)]
    repeated = sorted({e for e in epochs if epochs.count(e) > 1})
    if repeated:
        raise CheckpointImportError(
            f"{path} has more than one row for epochs {repeated}; keep one row per epoch"
        )
    out_rows: list[tuple[int, str, str, float]] = []
    targets: dict[tuple[str, str], str] = {}
    for column in columns:
        if column == key:
            continue
        group, metric = column_target(column, spec)
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
