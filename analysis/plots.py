"""PNG figures: one per group (judging metrics, plateau shaded, technique picks) and a heatmap."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from analysis.results import confidence_text, pick_text
from analysis.techniques import TECHNIQUES
from modules.atomic import atomic_path

if TYPE_CHECKING:
    from analysis.results import GroupAnalysis, RunAnalysis

__all__ = ["group_figure", "heatmap_figure", "pick_text", "save_figure", "write_plots"]
#: Height of one technique's row in the pick strip above the curves (axis units, curves span 0..1).
ROW = 0.07
#: Heatmap cells without a value (NaN): grey, hatched.
NAN_COLOR = "lightgrey"


def new_figure(figsize: tuple[float, float], **kwargs: object) -> Figure:
    """A figure drawn by the Agg canvas, never pyplot: plotting leaves the caller's backend alone."""
    figure = Figure(figsize=figsize, **kwargs)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: Path, dpi: int = 100) -> None:
    """Write ``figure`` as a PNG at ``path``, atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)


def group_figure(group: str, result: GroupAnalysis, index: str = "epoch") -> Figure:
    """The group's judging metrics (normalised, 1 = best) with the plateau shaded and every pick marked.

    Each technique's pick sits on its own row of a strip above the curves, so picks at the same
    epoch stay visible; an average pick is drawn as a bar over its window.
    """
    series = result.series
    figure = new_figure((10.5, 4.8))
    axes = figure.add_subplot()
    for judging in series.judging:
        raw = series.values[judging.metric]
        label = f"{judging.metric} ({judging.mode}; {np.nanmin(raw):.3g}..{np.nanmax(raw):.3g})"
        axes.plot(series.epochs, series.goodness[judging.metric], marker="o", markersize=3, alpha=0.7, label=label)
    axes.plot(series.epochs, series.composite, color="black", linewidth=2, label="goodness (mean)")
    if result.plateau_window:
        first, last = result.plateau_window
        axes.axvspan(first, last, color="tab:green", alpha=0.15, label=f"plateau {first}-{last}")
    names = list(result.recommendations)
    for row, name in enumerate(names):
        rec = result.recommendations[name]
        y = 1.08 + ROW * (len(names) - 1 - row)
        final = name == result.final_technique
        color = "black" if final else f"C{row + 3}"
        text = f"avg {rec.average[0]}-{rec.average[1]}" if rec.average else str(rec.epoch)
        abstains = rec.confidence <= 0 and not final
        label = f"{name}: {text} ({'abstains' if abstains else f'{rec.confidence:.0%}'})"
        if rec.average:
            axes.plot(rec.average, [y, y], color=color, linewidth=4, solid_capstyle="butt", label=label)
        else:
            axes.plot(
                [rec.epoch], [y], marker=TECHNIQUES[name].marker if name in TECHNIQUES else "o", markersize=9, color=color, linestyle="none",
                markerfacecolor="none" if abstains else color, label=label,
            )
            axes.axvline(rec.epoch, ymax=(y + 0.05) / (1.13 + ROW * len(names)), color=color, linewidth=0.8, alpha=0.5)
        axes.annotate(text, (rec.average[1] if rec.average else rec.epoch, y), xytext=(6, -3), textcoords="offset points", fontsize=7)
    if result.coupling_note:
        first, last = (result.pick, result.pick) if isinstance(result.pick, int) else result.pick
        axes.axvspan(first - 0.3, last + 0.3, color="tab:red", alpha=0.25, label=f"final {pick_text(result.pick)} (coupling)")
    axes.axhline(1.04, color="grey", linewidth=0.5)
    axes.set_ylim(-0.05, 1.13 + ROW * len(names))
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.set_xlabel(index)
    axes.set_ylabel("normalised metric (1 = best)")
    axes.set_title(f"{group}: {pick_text(result.pick)} ({confidence_text(result)})\npicks per technique above the curves", fontsize=10)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return figure


def heatmap_figure(analysis: RunAnalysis) -> Figure:
    """Groups x epochs heatmap of each group's normalised goodness.

    A cell without a value (the group's judging metric was missing or NaN there, so the epoch was
    not analysed) is grey and hatched, and the title says so, rather than an unexplained blank.
    """
    epochs = np.asarray(analysis.epochs)
    groups = list(analysis.groups)
    grid = np.full((len(groups), len(epochs)), np.nan)
    for row, group in enumerate(groups):
        series = analysis.groups[group].series
        grid[row, np.searchsorted(epochs, series.epochs)] = series.composite
    figure = new_figure((max(6, len(epochs) * 0.25), 1 + 0.5 * len(groups)))
    axes = figure.add_subplot()
    cmap = mpl.colormaps["viridis"].with_extremes(bad=NAN_COLOR)
    image = axes.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, vmin=0, vmax=1)
    for row, column in zip(*np.nonzero(~np.isfinite(grid))):
        axes.add_patch(
            Rectangle((column - 0.5, row - 0.5), 1, 1, facecolor=NAN_COLOR, edgecolor="dimgrey", hatch="///", linewidth=0)
        )
    axes.set_yticks(range(len(groups)), groups)
    step = max(1, len(epochs) // 15)
    axes.set_xticks(range(0, len(epochs), step), [str(e) for e in epochs[::step]])
    axes.set_xlabel(analysis.index)
    for row, group in enumerate(groups):
        pick = analysis.groups[group].pick
        first, last = (pick, pick) if isinstance(pick, int) else pick
        columns = np.searchsorted(epochs, [first, last])
        axes.add_patch(
            Rectangle((columns[0] - 0.5, row - 0.45), columns[1] - columns[0] + 1, 0.9, fill=False, edgecolor="red", linewidth=2)
        )
    title = "goodness per group and epoch; red box = recommended epoch or average window"
    if not np.isfinite(grid).all():
        title += "\ngrey hatched = no value (judging metric missing or NaN; epoch skipped for that group)"
    axes.set_title(title, fontsize=9)
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
        save_figure(group_figure(group, result, analysis.index), path)
        written.append(path)
    path = folder / "heatmap.png"
    save_figure(heatmap_figure(analysis), path)
    written.append(path)
    return written
