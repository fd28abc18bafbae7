"""Metrics a training library logged at arbitrary steps, read at the checkpoints.

The HF Trainer's ``log_history`` and Lightning's ``metrics.csv`` log a metric whenever it was
computed (train loss every few steps, eval metrics at evaluations). A checkpoint saved at step
``s`` gets, for each metric, the last value logged after the previous checkpoint and at or before
``s``: the value the library itself showed for that stretch of training.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pandas as pd

from modules.importing.report import ImportReport, MetricProblem
from modules.importing.wide_metrics import column_target, near_group
from modules.rundir.names import METRIC_COLUMNS
from modules.spec.schema import Spec

#: One log entry: the training step it belongs to and its named values.
LogEntry = tuple[float, Mapping[str, object]]


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip():
        try:
            return float(value)
        except ValueError:
            return None
    return None


def metrics_at_checkpoints(
    entries: Iterable[LogEntry],
    checkpoints: Mapping[int, float],
    spec: Spec,
    source: str,
    report: ImportReport,
    rename: Mapping[str, str] | None = None,
    skip: Iterable[str] = (),
) -> pd.DataFrame:
    """Long-form metrics with one value per metric per checkpoint (``checkpoints``: index -> step).

    ``rename`` maps the library's names to the run's (``loss`` -> ``train_loss``); names in
    ``skip`` (bookkeeping such as ``step`` or ``eval_runtime``) are left out. A value that is not a
    number is kept as missing and reported.
    """
    rename, skip = dict(rename or {}), set(skip)
    order = sorted(checkpoints.items(), key=lambda item: item[1])
    latest: dict[int, dict[str, float]] = {index: {} for index, _ in order}
    bad: dict[str, list[int]] = {}
    examples: dict[str, list[str]] = {}
    for step, values in sorted(entries, key=lambda entry: entry[0]):
        index = next((i for i, at in order if step <= at), None)
        if index is None:
            continue  # logged after the last checkpoint: no stored weights to attach it to
        for name, value in values.items():
            if name in skip or value is None or value == "":
                continue
            number = _number(value)
            name = rename.get(name, name)
            if number is None or math.isnan(number):
                bad.setdefault(name, []).append(index)
                examples.setdefault(name, []).append(str(value))
                continue
            latest[index][name] = number
    rows = []
    for index, values in latest.items():
        for name, number in values.items():
            group, metric = column_target(name, spec)
            rows.append((index, group, metric, number))
    for name in sorted({n for values in latest.values() for n in values} | set(bad)):
        if (likely := near_group(name, spec)) is not None:
            report.metric_near_groups.append((name, likely))
    for name, indices in bad.items():
        report.metric_problems.append(
            MetricProblem(source, name, "non-numeric", sorted(set(indices)), examples[name][:3])
        )
    report.metrics_file = source
    report.metric_rows = len(rows)
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)
