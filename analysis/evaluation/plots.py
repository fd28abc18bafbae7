"""PNG chart: test objective per candidate, the combination's difference with each baseline, and the deciding ones."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.plots import new_figure, save_figure
from modules.spec.schema import loss_sign

if TYPE_CHECKING:
    from analysis.evaluation.evaluate import Comparison, Evaluated, EvaluationResult

VERDICT_COLOURS = {"combination better": "tab:green", "baseline better": "tab:red", "no significant difference": "tab:gray"}
#: Marker drawn at each mean difference, so that a difference too small for its bar still shows.
MEAN_MARKER = "D"


#: Baselines that decide whether the combination is worth it; they get a panel of their own.
DECIDING = ("best single on val", "greedy soup")
#: Candidate labels wrap at this many characters, on at most ``LABEL_LINES`` lines (the report's table
#: has the full name): one merged name such as ``epoch 15 = last epoch (15) = ...`` would otherwise
#: take the width of the figure and leave its panels a sliver.
LABEL_WIDTH = 30
LABEL_LINES = 4
#: Width of the figure (inches) and the least height, so that it keeps a readable aspect with few rows.
WIDTH = 16.0
MIN_HEIGHT = 5.0


def wrap_label(name: str) -> str:
    """``name`` on lines of at most ``LABEL_WIDTH`` characters (broken at spaces),
    at most ``LABEL_LINES`` of them, the rest cut to an ellipsis."""
    return "\n".join(textwrap.wrap(name, LABEL_WIDTH, max_lines=LABEL_LINES, placeholder=" …", break_on_hyphens=False))


def _height(labels: list[str]) -> float:
    """Figure height (inches): a row per candidate, taller for a label on several lines."""
    rows = sum(0.22 + 0.18 * label.count("\n") + 0.16 for label in labels)
    return max(MIN_HEIGHT, 1.6 + rows)


def evaluation_figure(result: EvaluationResult) -> Figure:
    """Left: test objective of every candidate. Middle: combination minus each baseline, 95% interval.
    Right: the comparisons that decide (best single epoch on validation, greedy soup, best baseline on
    test) in percent of that baseline, on a scale of their own, so that a far worse baseline elsewhere
    does not shrink them to a dot at 0.

    Each row has a pale bar to the mean difference, the interval as a thick line with caps and a
    marker at the mean, all in the colour of the verdict; a legend names the colours.
    """
    metric = result.objective_metric
    names = [wrap_label(e.candidate.name) for e in result.evaluated]
    values = [e.metrics["test"][metric] for e in result.evaluated]
    fig = new_figure((WIDTH, _height(names)), layout="constrained")
    left, middle, right = fig.subplots(1, 3, width_ratios=[1.0, 1.0, 0.8])
    colours = ["tab:blue"] + ["tab:orange"] * (len(names) - 1)
    left.barh(range(len(names)), values, color=colours)
    left.set_yticks(range(len(names)), names, fontsize="small")
    left.invert_yaxis()
    left.set_xlabel(f"test {metric}")
    left.set_title("Test objective")
    per_example = "loss" if result.per_example_name == "per_example_losses" else result.per_example_name
    pairs = list(zip(result.evaluated[1:], result.comparisons))
    _difference_rows(middle, [(c.baseline, c, 1.0) for _, c in pairs])
    middle.set_xlabel(f"combination − baseline, test {per_example}\n(mean ◆ and 95% paired bootstrap interval)")
    middle.set_title("Below 0: combination better")
    best_on_test = min(pairs, key=lambda p: loss_sign(result.objective_mode) * p[0].metrics["test"][metric], default=None)
    deciding = [
        (c.baseline, c, _percent_scale(item))
        for item, c in pairs
        if any(d in c.baseline for d in DECIDING) or (best_on_test is not None and item is best_on_test[0])
    ]
    _difference_rows(right, deciding)
    right.set_xlabel(f"combination − baseline, % of the baseline's mean test {per_example}")
    right.set_title("The comparisons that decide (own scale)")
    handles = [
        Line2D([], [], color=colour, linewidth=2.5, marker=MEAN_MARKER, markeredgecolor="black", label=verdict)
        for verdict, colour in VERDICT_COLOURS.items()
    ]
    right.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
        title="verdict on test", title_fontsize="small",
    )
    return fig


def _percent_scale(item: Evaluated) -> float:
    """Factor from a difference of per-example values to percent of the baseline's mean (1 when it is 0)."""
    mean = abs(float(np.mean(item.test_losses))) if item.test_losses.size else 0.0
    return 100.0 / mean if mean > 0 else 1.0


def _difference_rows(axes: Axes, rows: list[tuple[str, Comparison, float]]) -> None:
    """One row per comparison: pale bar to the mean, interval with caps, marker at the mean; x scaled."""
    for row, (_, comp, scale) in enumerate(rows):
        interval, colour = comp.test_interval, VERDICT_COLOURS[comp.verdict]
        low, high, mean = interval.low * scale, interval.high * scale, interval.mean_difference * scale
        axes.barh(row, mean, color=colour, alpha=0.3, height=0.6)
        axes.plot([low, high], [row, row], color=colour, linewidth=2.5, solid_capstyle="butt", gid="interval")
        axes.plot([low, high], [row, row], linestyle="none", marker="|", markersize=12, color=colour)
        axes.plot(
            [mean], [row], linestyle="none", marker=MEAN_MARKER, markersize=7,
            markerfacecolor=colour, markeredgecolor="black", markeredgewidth=0.6, gid="mean",
        )
    axes.set_yticks(range(len(rows)), [wrap_label(name) for name, _, _ in rows], fontsize="small")
    axes.set_ylim(len(rows) - 0.5, -0.5)
    axes.axvline(0.0, color="black", linewidth=0.8)


def plot_evaluation(result: EvaluationResult, path: str | os.PathLike[str]) -> None:
    """Write ``evaluation_figure(result)`` as a PNG, atomically."""
    save_figure(evaluation_figure(result), Path(path), dpi=110)
