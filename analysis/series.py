"""Long-form metrics -> per-group series over the recorded checkpoint epochs.

Each group is judged by its spec metrics (``spec.group_metrics``), read from the whole-model
rows (group ``model``); a group without any falls back to ``val_<objective.metric>``. A judging
metric recorded at no checkpoint epoch is an error (most often a typo in the spec); epochs where
a judging metric is missing, NaN or infinite are skipped for that group, with a warning that
says which.
"""

from __future__ import annotations

import difflib
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError, AnalysisWarning
from analysis.stats import normalise
from modules.spec.schema import MODEL_GROUP, JudgingMetric, Spec

#: The statistics (a Mann-Kendall window of 5, CUSUM segments of 2) need this many checkpoints.
MIN_CHECKPOINTS = 5
#: Per-group gradient-health metrics written by the Recorder.
HEALTH_METRICS = ("grad_norm", "grad_norm_ratio", "update_ratio", "dead_fraction")
GRADIENT_METRICS = ("grad_norm", "grad_norm_ratio")


@dataclass
class GroupSeries:
    """One group's curves over the epochs it is analysed at (``epochs``)."""

    group: str
    epochs: np.ndarray
    judging: list[JudgingMetric]
    judged_by_fallback: bool
    values: dict[str, np.ndarray]
    goodness: dict[str, np.ndarray]
    composite: np.ndarray
    loss_goodness: np.ndarray
    loss_metric: str
    health: dict[str, np.ndarray]
    health_source: str
    recorded: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class RunSeries:
    """Every group's series plus the whole-model metrics, over the run's checkpoint epochs."""

    epochs: np.ndarray
    groups: dict[str, GroupSeries]
    model_metrics: dict[str, np.ndarray]
    notes: list[str]
    even_spacing: bool


_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside the analysis package
    (the code that called the analysis), not at a line inside it."""
    frame, level = sys._getframe(1), 1  # the caller of this function, i.e. the one calling warn()
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


def _note(notes: list[str], message: str, warn: bool = True) -> None:
    """Record ``message`` in ``notes`` (the report's) and, unless ``warn`` is False, warn with it."""
    notes.append(message)
    if warn:
        warnings.warn(message, AnalysisWarning, stacklevel=_caller_stacklevel())


def wide_metrics(metrics: pd.DataFrame, epochs: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """group -> metric -> values aligned with ``epochs`` (NaN where not recorded)."""
    frame = metrics[metrics["epoch"].isin(epochs)].drop_duplicates(["epoch", "group", "metric"], keep="last")
    if frame.empty:
        return {}
    table = frame.pivot(index=["group", "metric"], columns="epoch", values="value").reindex(columns=epochs)
    out: dict[str, dict[str, np.ndarray]] = {}
    for (group, metric), row in zip(table.index, table.to_numpy(dtype=float)):
        out.setdefault(str(group), {})[str(metric)] = row
    return out


def non_finite_text(values: np.ndarray, epochs: np.ndarray) -> str:
    """Where ``values`` is not finite, by kind: ``"missing or NaN at epochs [3, 4], infinite at epochs [8]"``."""
    parts = []
    nan, inf = np.isnan(values), np.isinf(values)
    if nan.any():
        parts.append(f"missing or NaN at epochs {epochs[nan].tolist()}")
    if inf.any():
        parts.append(f"infinite at epochs {epochs[inf].tolist()}")
    return ", ".join(parts)


def check_epochs(epochs: list[int] | np.ndarray, source: str) -> tuple[np.ndarray, list[str]]:
    """Sorted checkpoint epochs; raises below MIN_CHECKPOINTS; notes uneven spacing."""
    epochs = np.asarray(sorted(int(e) for e in epochs), dtype=np.int64)
    if len(epochs) < MIN_CHECKPOINTS:
        raise AnalysisError(
            f"{source} has {len(epochs)} checkpoint(s) (epochs {epochs.tolist()}); the statistics need at"
            f" least {MIN_CHECKPOINTS}: record checkpoints more often or analyse a longer run"
        )
    notes: list[str] = []
    gaps = np.diff(epochs)
    if len(set(gaps.tolist())) > 1:
        counts = pd.Series(gaps).value_counts().sort_index()
        detail = ", ".join(f"{int(g)} epochs x{int(c)}" for g, c in counts.items())
        _note(
            notes,
            f"{source}: checkpoint epochs are not evenly spaced (gaps: {detail}); windows count"
            " checkpoints and slopes are per epoch, so uneven gaps are handled",
        )
    return epochs, notes


#: How a validation value is named: the Recorder's ``val_loss``, the HF Trainer's ``eval_loss``,
#: a Lightning module's ``val/loss`` or ``validation_loss``.
VALIDATION_PREFIXES = ("val_", "eval_", "val/", "validation_")


def validation_metric(objective: str, recorded: Iterable[str]) -> str:
    """The recorded name of the objective's validation value (``val_<objective>`` if none is recorded)."""
    recorded = set(recorded)
    return next((p + objective for p in VALIDATION_PREFIXES if p + objective in recorded), f"val_{objective}")


def build_run_series(
    metrics: pd.DataFrame,
    epochs: list[int] | np.ndarray,
    groups: list[str],
    spec: Spec,
    weight_health: dict[str, dict[str, np.ndarray]] | None = None,
    source: str = "run",
    spec_file: str | None = None,
) -> RunSeries:
    """Per-group series of a run; ``weight_health`` supplies health for groups without gradients.

    ``source`` names the run and ``spec_file`` the spec's file (when known) in messages.
    """
    epochs, notes = check_epochs(epochs, source)
    wide = wide_metrics(metrics, epochs)
    model = wide.get(MODEL_GROUP, {})
    if not model:
        raise AnalysisError(
            f"{source} has no whole-model metrics (group {MODEL_GROUP!r}) at its checkpoint epochs"
            f" {epochs.tolist()}; record validation metrics with the Recorder or import a metrics file"
        )
    loss_metric = validation_metric(spec.objective.metric, model)
    series = {}
    for group in groups:
        series[group] = _group_series(
            group, epochs, model, wide.get(group, {}), spec, loss_metric, (weight_health or {}).get(group), source,
            spec_file,
        )
    return RunSeries(epochs, series, model, notes, len(set(np.diff(epochs).tolist())) <= 1)


def _group_series(
    group: str,
    epochs: np.ndarray,
    model: dict[str, np.ndarray],
    own: dict[str, np.ndarray],
    spec: Spec,
    loss_metric: str,
    weight_health: dict[str, np.ndarray] | None,
    source: str,
    spec_file: str | None = None,
) -> GroupSeries:
    notes: list[str] = []
    judging = spec.judging_metrics(group)
    for metric in judging:
        _check_recorded(metric.metric, model, group, spec.name, spec_file, source)
    fallback = not judging
    if fallback:
        if loss_metric not in model:
            raise AnalysisError(
                f"{source}: group {group!r} has no judging metric in the spec's group_metrics and the fallback"
                f" {loss_metric!r} ({', '.join(VALIDATION_PREFIXES)} + objective.metric) is not recorded either; recorded model"
                f" metrics are {sorted(model)}. Add group_metrics for {group!r} to the spec"
            )
        judging = [JudgingMetric(metric=loss_metric, mode=spec.objective.mode)]
        _note(notes, f"group {group!r} has no judging metric in the spec; judged by validation loss {loss_metric!r}", warn=False)
    keep = np.ones(len(epochs), dtype=bool)
    for metric in judging:
        missing = ~np.isfinite(model[metric.metric])
        if missing.any():
            _note(
                notes,
                f"group {group!r}: metric {metric.metric!r} is {non_finite_text(model[metric.metric], epochs)};"
                " those epochs are skipped for this group",
            )
            keep &= ~missing
    if keep.sum() < MIN_CHECKPOINTS:
        raise AnalysisError(
            f"{source}: group {group!r} has only {int(keep.sum())} epochs with every judging metric"
            f" ({[m.metric for m in judging]}) recorded; the statistics need at least {MIN_CHECKPOINTS}."
            " Record the metrics at more checkpoints or judge the group by other metrics in the spec"
        )
    kept = epochs[keep]
    values = {m.metric: model[m.metric][keep] for m in judging}
    goodness = {m.metric: normalise(values[m.metric], m.mode) for m in judging}
    composite = np.mean(np.vstack(list(goodness.values())), axis=0)
    if loss_metric in model:
        loss = model[loss_metric][keep]
        if not np.isfinite(loss).all():
            if loss_metric not in values:
                _note(
                    notes,
                    f"group {group!r}: {loss_metric!r} is {non_finite_text(loss, kept)}; the MCDA loss criterion"
                    " skips those epochs",
                )
            loss = np.where(np.isfinite(loss), loss, np.nan)
        loss_goodness = normalise(loss, spec.objective.mode) if np.isfinite(loss).any() else np.full(len(kept), np.nan)
    else:
        loss_goodness = composite.copy()
        _note(notes, f"group {group!r}: {loss_metric!r} is not recorded; the MCDA loss criterion uses the judging metrics")
    health, health_source = _health(group, own, weight_health, keep, epochs, notes)
    return GroupSeries(
        group, kept, judging, fallback, values, goodness, composite, loss_goodness, loss_metric,
        health, health_source, dict(own), notes,
    )


def _check_recorded(
    metric: str, model: dict[str, np.ndarray], group: str, spec_name: str, spec_file: str | None, source: str
) -> None:
    """Raise when a judging metric has no finite value at any checkpoint epoch (usually a typo):
    judging the group by something else instead would silently answer another question."""
    if metric in model and np.isfinite(model[metric]).any():
        return
    recorded = sorted(m for m, values in model.items() if np.isfinite(values).any())
    close = difflib.get_close_matches(metric, recorded, n=3, cutoff=0.6)
    state = "is NaN at every checkpoint epoch" if metric in model else "is recorded at no checkpoint epoch"
    where = spec_file or f"spec {spec_name!r}"
    hint = f"did you mean {' or '.join(repr(m) for m in close)}? " if close else ""
    raise AnalysisError(
        f"{where}: group_metrics for group {group!r} names metric {metric!r}, which {state} of {source};"
        f" {hint}the run's recorded whole-model metrics are {recorded}. Fix the metric name in the spec's"
        f" group_metrics for {group!r} (or remove it to judge the group by the others)"
    )


def _health(
    group: str,
    own: dict[str, np.ndarray],
    weight_health: dict[str, np.ndarray] | None,
    keep: np.ndarray,
    epochs: np.ndarray,
    notes: list[str],
) -> tuple[dict[str, np.ndarray], str]:
    recorded = any(np.isfinite(own.get(m, np.array([np.nan]))).any() for m in GRADIENT_METRICS)
    if recorded:
        chosen, source = {m: own[m] for m in HEALTH_METRICS if m in own}, "recorded"
    elif weight_health:
        chosen, source = dict(weight_health), "weights"
        _note(
            notes,
            f"group {group!r}: no recorded gradients; update/parameter ratio and dead units are"
            " computed from the weights of consecutive checkpoints",
            warn=False,
        )
    else:
        _note(notes, f"group {group!r}: no gradient-health data; the gradient criterion is neutral", warn=False)
        return {}, "none"
    health = {}
    for metric, values in chosen.items():
        finite = np.isfinite(values)
        if not finite.any():
            continue
        # The first update ratio has no previous checkpoint to compare with: expected, not reported.
        expected = np.zeros_like(finite)
        if metric == "update_ratio":
            expected[0] = True
        odd = ~finite & ~expected
        if odd.any():
            _note(
                notes,
                f"group {group!r}: health metric {metric!r} is {non_finite_text(np.where(odd, values, 0.0), epochs)};"
                " those epochs count as healthy for it",
            )
        health[metric] = np.where(finite, values, np.nan)[keep]
    return health, source
