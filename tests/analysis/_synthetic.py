"""Synthetic runs for the analysis tests: metrics frames from hand-made curves, tiny run dirs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from modules.rundir.run_dir import RunWriter
from modules.spec.schema import Spec, dump_spec, parse_spec

EPOCHS = list(range(2, 62, 2))  # 30 checkpoints, every 2 epochs, like the seed


def make_spec(group_metrics: dict[str, list[tuple[str, str]]], groups: list[str] | None = None) -> Spec:
    """A spec over ``groups`` judged by ``group_metrics`` (callables are never called here)."""
    groups = groups or list(group_metrics)
    return parse_spec(
        {
            "name": "synthetic",
            "model": "tests.modules._tiny:build_model",
            "data": "tests.modules._tiny:load_data",
            "evaluate": "tests.modules._tiny:evaluate",
            "objective": {"metric": "loss", "mode": "min"},
            "groups": {g: [f"{g}."] for g in groups},
            "group_metrics": {
                g: [{"metric": m, "mode": mode} for m, mode in metrics] for g, metrics in group_metrics.items()
            },
        }
    )


def frame(
    epochs: list[int],
    model: dict[str, list[float] | np.ndarray],
    per_group: dict[str, dict[str, list[float] | np.ndarray]] | None = None,
) -> pd.DataFrame:
    """Long-form metrics: ``model`` metrics under group 'model', ``per_group`` under each group."""
    rows = []
    for metric, values in model.items():
        rows += [(e, "model", metric, float(v)) for e, v in zip(epochs, values)]
    for group, metrics in (per_group or {}).items():
        for metric, values in metrics.items():
            rows += [(e, group, metric, float(v)) for e, v in zip(epochs, values)]
    return pd.DataFrame(rows, columns=["epoch", "group", "metric", "value"])


def write_run(path: Path, spec: Spec, metrics: pd.DataFrame, epochs: list[int], weights: dict[int, dict[str, dict[str, torch.Tensor]]] | None = None) -> Path:
    """A run directory with tiny tensors per group per epoch and the given metrics."""
    writer = RunWriter.create(path, spec.name, {g: [f"{g}.weight"] for g in spec.groups})
    for index, epoch in enumerate(epochs):
        if weights is not None:
            states = weights[epoch]
        else:
            states = {g: {f"{g}.weight": torch.full((4, 3), float(index + 1))} for g in spec.groups}
        writer.write_epoch(epoch, states)
    writer.write_metrics(metrics)
    writer.write_spec_text(dump_spec(spec))
    return path


def context_for(
    model: dict[str, list[float] | np.ndarray],
    judging: list[tuple[str, str]],
    health: dict[str, list[float] | np.ndarray] | None = None,
    epochs: list[int] | None = None,
    thresholds: object = None,
):
    """A GroupContext for group 'g' judged by ``judging`` over hand-made curves."""
    from analysis.series import build_run_series
    from analysis.techniques import GroupContext
    from analysis.thresholds import Thresholds

    epochs = epochs or EPOCHS
    spec = make_spec({"g": judging})
    metrics = frame(epochs, model, {"g": health} if health else None)
    series = build_run_series(metrics, epochs, ["g"], spec).groups["g"]
    return GroupContext(series, thresholds or Thresholds())
