"""Run every technique on every group of a run: ``analyze_run`` (a run directory) and
``analyze_metrics`` (a long-form metrics frame, the pure path the benchmark times)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from analysis.couplings import apply_couplings
from analysis.errors import AnalysisError
from analysis.results import FORMAT_VERSION, GroupAnalysis, RunAnalysis
from analysis.series import (
    GRADIENT_METRICS,
    MIN_CHECKPOINTS,
    GroupSeries,
    build_run_series,
    check_epochs,
)
from analysis.techniques import TECHNIQUES
from analysis.techniques.base import GroupContext, Technique, plateau_window
from analysis.thresholds import Thresholds
from analysis.weight_health import weight_health
from modules.errors import RunDirError
from modules.rundir.run_dir import METRICS_NAME, SPEC_NAME, RunDir
from modules.spec.schema import Spec, load_spec

__all__ = ["FORMAT_VERSION", "GroupAnalysis", "RunAnalysis", "analyze_group", "analyze_metrics", "analyze_run"]


def analyze_group(
    series: GroupSeries, thresholds: Thresholds, techniques: Mapping[str, Technique] | None = None
) -> GroupAnalysis:
    """Run the voting techniques, then the non-voting ones, on one group; the last non-voting one
    (the ensemble, with the registered ``TECHNIQUES``) makes the pick."""
    techniques = TECHNIQUES if techniques is None else techniques
    voting = frozenset(name for name, t in techniques.items() if t.votes)
    deciding = [name for name, t in techniques.items() if not t.votes]
    if not deciding:
        raise AnalysisError(f"techniques {list(techniques)} have no non-voting technique to make the pick")
    context = GroupContext(series, thresholds, voting=voting)
    for name in [*sorted(voting, key=list(techniques).index), *deciding]:
        context.recommendations[name] = techniques[name].run(context)
    final = context.recommendations[deciding[-1]]
    pick: int | tuple[int, int] = final.average if final.average is not None else int(final.epoch)
    return GroupAnalysis(
        series, dict(context.recommendations), pick, plateau_window(context.recommendations), final_technique=deciding[-1]
    )


def analyze_metrics(
    metrics: pd.DataFrame,
    epochs: list[int] | np.ndarray,
    groups: list[str],
    spec: Spec,
    thresholds: Thresholds | None = None,
    weight_health_by_group: dict[str, dict[str, np.ndarray]] | None = None,
    source: str = "run",
    spec_file: str | None = None,
) -> RunAnalysis:
    """Analyse a long-form metrics frame (``epoch, group, metric, value``) at checkpoint ``epochs``.

    ``source`` names the run and ``spec_file`` the spec's file (when known) in messages.
    """
    thresholds = thresholds or Thresholds()
    thresholds.check_run(len(epochs), f"thresholds for {source}")
    run_series = build_run_series(metrics, epochs, groups, spec, weight_health_by_group, source, spec_file)
    results = {group: analyze_group(series, thresholds) for group, series in run_series.groups.items()}
    notes = list(run_series.notes)
    notes += apply_couplings(results, spec)
    for result in results.values():
        notes += result.series.notes
    return RunAnalysis(
        source, spec.name, run_series.epochs.tolist(), thresholds, results, run_series.model_metrics, notes
    )


def groups_without_gradients(metrics: pd.DataFrame, groups: list[str]) -> list[str]:
    """Groups with no finite recorded gradient metric (imported runs)."""
    recorded = metrics[metrics["metric"].isin(GRADIENT_METRICS) & np.isfinite(metrics["value"])]
    have = set(recorded["group"].astype(str))
    return [g for g in groups if g not in have]


def analyze_run(
    run: RunDir,
    spec: Spec | None = None,
    thresholds: Thresholds | None = None,
    source: str | None = None,
    spec_file: str | None = None,
) -> RunAnalysis:
    """Analyse a run directory; ``spec`` defaults to its stored sweetspot.yaml, thresholds to defaults.

    ``source`` is how messages and the results name the run (default: ``run.label``, its folder or URI): a caller that
    imported the user's checkpoint folder into a temporary run passes the folder the user gave.
    ``spec_file`` names the spec's file in messages (default: the stored copy when it is used).
    """
    label = source or run.label
    if spec is None:
        stored = run.spec_path()
        if stored is None:
            raise AnalysisError(f"{label} stores no sweetspot.yaml; pass the spec (--spec sweetspot.yaml)")
        spec = load_spec(stored)
        spec_file = spec_file or str(run.store.where(SPEC_NAME)).replace(run.label, label, 1)
    missing = [g for g in spec.groups if g not in run.groups]
    if missing:
        raise AnalysisError(
            f"spec {spec.name!r} names groups {missing} that run {label} does not have (its groups:"
            f" {run.groups}); pass the spec the run was recorded with"
        )
    epochs = run.epochs
    if len(epochs) < MIN_CHECKPOINTS:
        check_epochs(epochs, label)  # raises, before any weights are read
    (thresholds or Thresholds()).check_run(len(epochs), f"thresholds for {label}")
    metrics = run.metrics()
    if metrics.empty:
        where = "metrics.parquet" if source else str(run.store.where(METRICS_NAME))
        raise AnalysisError(
            f"{label} has no recorded metrics ({where} is missing or empty);"
            " record the run with the Recorder or import a metrics file with the checkpoints"
        )
    no_grads = groups_without_gradients(metrics, run.groups)
    try:
        proxies = weight_health(run, no_grads, list(epochs)) if no_grads else None
    except RunDirError as error:
        message = str(error).replace(run.label, label)
        raise AnalysisError(f"cannot compute weight-based health for {no_grads}: {message}") from None
    analysis = analyze_metrics(metrics, epochs, run.groups, spec, thresholds, proxies, label, spec_file)
    analysis.index = run.index
    return analysis
