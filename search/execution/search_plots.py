"""Search plots with matplotlib's object API (no pyplot, no backend switch)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.figure import Figure

from modules.atomic import atomic_path
from modules.spec.schema import is_better
from search.execution.results import DIGITS, SearchResult

BASELINE_COLOURS = {"best single epoch": "tab:blue", "greedy soup": "tab:green", "last epoch": "tab:gray", "analysis pick": "tab:purple"}


def _save(figure: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)  # constrained layout fits it: no second draw for a tight box


def printed(value: float) -> float:
    """``value`` as the report prints it (``DIGITS`` significant digits): a difference below that is a
    rounding difference, and the plot draws none."""
    return float(f"{value:.{DIGITS}g}")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def convergence_figure(result: SearchResult) -> Figure:
    """Best search objective so far against trials, with the baselines as lines; values as printed."""
    trials = result.trials
    finished = trials[trials["status"] == "finished"]
    figure = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = figure.add_subplot()
    shown: list[float] = []
    if not finished.empty:
        values = [printed(v) if _finite(v) else math.nan for v in trials["objective"].tolist()]
        best, so_far = [], math.nan
        for value in values:
            if not math.isnan(value) and (math.isnan(so_far) or is_better(value, so_far, result.mode)):
                so_far = value
            best.append(so_far)
        ax.scatter(range(1, len(values) + 1), values, s=9, color="tab:orange", alpha=0.45, label="trial")
        ax.plot(range(1, len(best) + 1), best, color="black", lw=1.6, label="best so far", gid="best so far")
        shown += [v for v in values if not math.isnan(v)]
    for name, baseline in result.baselines.items():
        if not _finite(baseline.search_score):
            continue
        score = printed(baseline.search_score)
        ax.axhline(score, ls="--", lw=1, color=BASELINE_COLOURS.get(name, "tab:red"), label=name, gid=name)
        shown.append(score)
    if shown:
        ax.set_ylim(*y_range(shown))
    # plain numbers on the axis, never an offset such as "1e-7 + 1.225824"
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.set_xlabel("trial (in the order they finished)")
    ax.set_ylabel(f"{result.objective} on the search split ({'lower' if result.mode == 'min' else 'higher'} is better)")
    ax.set_title("Crossover search: convergence")
    ax.legend(fontsize=8, loc="best")
    return figure


def plot_convergence(result: SearchResult, path: Path) -> None:
    """Write ``convergence_figure(result)`` as a PNG."""
    _save(convergence_figure(result), path)


def y_range(values: list[float]) -> tuple[float, float]:
    """A frame holding every value, at least a few printed digits tall: baselines that tie, or differ
    by a rounding difference, sit on one line in a readable frame rather than a 1e-7 sliver."""
    low, high = min(values), max(values)
    magnitude = max(abs(low), abs(high))
    step = 10.0 ** (math.floor(math.log10(magnitude)) - (DIGITS - 1)) if magnitude > 0 else 10.0 ** -(DIGITS - 1)
    if high - low < 4 * step:
        centre = (low + high) / 2
        low, high = centre - 2 * step, centre + 2 * step
    pad = 0.08 * (high - low)
    return low - pad, high + pad


def plot_per_group(result: SearchResult, path: Path) -> None:
    """Per group: each finished trial's objective against the centre of that group's chosen epochs."""
    finished = result.trials[result.trials["status"] == "finished"]
    groups = [c.removeprefix("choice/") for c in result.trials.columns if c.startswith("choice/")]
    columns = min(4, max(1, len(groups)))
    rows = max(1, math.ceil(len(groups) / columns))
    figure = Figure(figsize=(3.2 * columns, 2.8 * rows), layout="constrained")
    pick = result.pick.epochs
    for index, group in enumerate(groups):
        ax = figure.add_subplot(rows, columns, index + 1)
        centres, widths, values = [], [], []
        for text, value in zip(finished[f"choice/{group}"], finished["objective"]):
            epochs = json.loads(text) if isinstance(text, str) else None
            if not epochs:
                continue
            centres.append(sum(epochs) / len(epochs))
            widths.append(len(epochs))
            values.append(value)
        ax.scatter(centres, values, s=[8 + 6 * (w - 1) for w in widths], alpha=0.5, color="tab:blue")
        chosen = pick.get(group)
        if chosen:
            ax.axvline(sum(chosen) / len(chosen), color="tab:red", lw=1.2, label="pick")
        ax.set_title(group, fontsize=9)
        ax.tick_params(labelsize=7)
        if index % columns == 0:
            ax.set_ylabel(result.objective, fontsize=8)
        if index >= len(groups) - columns:
            ax.set_xlabel("chosen epoch (centre; size = epochs averaged)", fontsize=7)
    figure.suptitle("Objective against each group's chosen epoch (red: the pick)", fontsize=10)
    _save(figure, path)
