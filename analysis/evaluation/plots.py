"""PNG chart: test objective per candidate, and the combination's difference with its interval."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.plots import new_figure, save_figure

if TYPE_CHECKING:
    from analysis.evaluation.evaluate import EvaluationResult

VERDICT_COLOURS = {"combination better": "tab:green", "baseline better": "tab:red", "no significant difference": "tab:gray"}
#: Marker drawn at each mean difference, so that a difference too small for its bar still shows.
MEAN_MARKER = "D"


def evaluation_figure(result: EvaluationResult) -> Figure:
    """Left: test objective of every candidate. Right: combination minus each baseline, 95% interval.

    On the right each row has a pale bar to the mean difference, the interval as a thick line with
    caps and a marker at the mean, all in the colour of the verdict; a legend names the colours.
    """
    metric = result.objective_metric
    names = [e.candidate.name for e in result.evaluated]
    values = [e.metrics["test"][metric] for e in result.evaluated]
    height = 1.6 + 0.38 * len(names)
    fig = new_figure((14, height), layout="constrained")
    left, right = fig.subplots(1, 2)
    colours = ["tab:blue"] + ["tab:orange"] * (len(names) - 1)
    left.barh(range(len(names)), values, color=colours)
    left.set_yticks(range(len(names)), names)
    left.invert_yaxis()
    left.set_xlabel(f"test {metric}")
    left.set_title("Test objective")
    comps = result.comparisons
    for row, comp in enumerate(comps):
        interval, colour = comp.test_interval, VERDICT_COLOURS[comp.verdict]
        right.barh(row, interval.mean_difference, color=colour, alpha=0.3, height=0.6)
        right.plot([interval.low, interval.high], [row, row], color=colour, linewidth=2.5, solid_capstyle="butt", gid="interval")
        right.plot([interval.low, interval.high], [row, row], linestyle="none", marker="|", markersize=12, color=colour)
        right.plot(
            [interval.mean_difference], [row], linestyle="none", marker=MEAN_MARKER, markersize=7,
            markerfacecolor=colour, markeredgecolor="black", markeredgewidth=0.6, gid="mean",
        )
    right.set_yticks(range(len(comps)), [c.baseline for c in comps])
    right.set_ylim(len(comps) - 0.5, -0.5)
    right.axvline(0.0, color="black", linewidth=0.8)
    per_example = "loss" if result.per_example_name == "per_example_losses" else result.per_example_name
    right.set_xlabel(f"combination − baseline, test {per_example}\n(mean ◆ and 95% paired bootstrap interval)")
    right.set_title("Below 0: combination better")
    handles = [
        Line2D([], [], color=colour, linewidth=2.5, marker=MEAN_MARKER, markeredgecolor="black", label=verdict)
        for verdict, colour in VERDICT_COLOURS.items()
    ]
    right.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
        title="verdict on test", title_fontsize="small",
    )
    return fig


def plot_evaluation(result: EvaluationResult, path: str | os.PathLike[str]) -> None:
    """Write ``evaluation_figure(result)`` as a PNG, atomically."""
    save_figure(evaluation_figure(result), Path(path), dpi=110)
