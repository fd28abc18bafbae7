"""PNG figures: one per group (judging metrics, plateau shaded, technique picks) and a heatmap."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from modules.atomic import atomic_path  # noqa: E402

if TYPE_CHECKING:
    from analysis.pipeline import GroupAnalysis, RunAnalysis

PICK_STYLES = {"plateau": "--", "task_metrics": ":", "mcda": "-.", "gradient_health": (0, (1, 3)), "ensemble": "-"}


def _save(figure: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def group_figure(group: str, result: GroupAnalysis) -> plt.Figure:
    """The group's judging metrics (normalised, 1 = best) over epochs with picks and plateau."""
    series = result.series
    figure, axes = plt.subplots(figsize=(10.5, 4.5))
    for judging in series.judging:
        raw = series.values[judging.metric]
        label = f"{judging.metric} ({judging.mode}; {np.nanmin(raw):.3g}..{np.nanmax(raw):.3g})"
        axes.plot(series.epochs, series.goodness[judging.metric], marker="o", markersize=3, label=label)
    axes.plot(series.epochs, series.composite, color="black", linewidth=2, label="goodness (mean)")
    if result.plateau_window:
        axes.axvspan(*result.plateau_window, color="tab:green", alpha=0.15, label=f"plateau {result.plateau_window[0]}-{result.plateau_window[1]}")
    for index, (name, rec) in enumerate(result.recommendations.items()):
        axes.axvline(rec.epoch, color=f"C{index + 3}", linestyle=PICK_STYLES.get(name, "--"), label=f"{name}: {rec.epoch} ({rec.confidence:.0%})")
    axes.set_xlabel("epoch")
    axes.set_ylabel("normalised metric (1 = best)")
    axes.set_title(f"group {group}: pick {result.pick}")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return figure


def heatmap_figure(analysis: RunAnalysis) -> plt.Figure:
    """Groups x epochs heatmap of each group's normalised goodness."""
    epochs = np.asarray(analysis.epochs)
    groups = list(analysis.groups)
    grid = np.full((len(groups), len(epochs)), np.nan)
    for row, group in enumerate(groups):
        series = analysis.groups[group].series
        grid[row, np.searchsorted(epochs, series.epochs)] = series.composite
    figure, axes = plt.subplots(figsize=(max(6, len(epochs) * 0.25), 1 + 0.5 * len(groups)))
    image = axes.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    axes.set_yticks(range(len(groups)), groups)
    step = max(1, len(epochs) // 15)
    axes.set_xticks(range(0, len(epochs), step), [str(e) for e in epochs[::step]])
    axes.set_xlabel("epoch")
    figure.colorbar(image, ax=axes, label="normalised goodness (1 = best)")
    figure.tight_layout()
    return figure


def write_plots(analysis: RunAnalysis, folder: str | os.PathLike[str]) -> list[Path]:
    """Write ``<group>.png`` for each group and ``heatmap.png`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for group, result in analysis.groups.items():
        path = folder / f"{group}.png"
        _save(group_figure(group, result), path)
        written.append(path)
    path = folder / "heatmap.png"
    _save(heatmap_figure(analysis), path)
    written.append(path)
    return written
