"""Search plots with matplotlib's object API (no pyplot, no backend switch)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.figure import Figure

from modules.atomic import atomic_path
from modules.spec.schema import is_better
from search.execution.results import SearchResult

BASELINE_COLOURS = {"best single epoch": "tab:blue", "greedy soup": "tab:green", "last epoch": "tab:gray", "analysis pick": "tab:purple"}


def _save(figure: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_convergence(result: SearchResult, path: Path) -> None:
    """Best search objective so far against trials, with the baselines as lines."""
    trials = result.trials
    finished = trials[trials["status"] == "finished"]
    figure = Figure(figsize=(7.5, 4.2))
    ax = figure.add_subplot()
    if not finished.empty:
        values = trials["objective"].tolist()
        best, so_far = [], math.nan
        for value in values:
            if value is not None and not math.isnan(value):
                if math.isnan(so_far) or is_better(value, so_far, result.mode):
                    so_far = value
            best.append(so_far)
        ax.scatter(range(1, len(values) + 1), values, s=9, color="tab:orange", alpha=0.45, label="trial")
        ax.plot(range(1, len(best) + 1), best, color="black", lw=1.6, label="best so far")
    for name, baseline in result.baselines.items():
        ax.axhline(baseline.search_score, ls="--", lw=1, color=BASELINE_COLOURS.get(name, "tab:red"), label=name)
    _focus(ax, result)
    ax.set_xlabel("trial (in the order they finished)")
    ax.set_ylabel(f"{result.objective} on the search split ({'lower' if result.mode == 'min' else 'higher'} is better)")
    ax.set_title("Crossover search: convergence")
    ax.legend(fontsize=8, loc="best")
    _save(figure, path)


def _focus(ax: object, result: SearchResult) -> None:
    """Keep the band between the best trial and the best single epoch readable: far-off trials and
    baselines (an early or the last epoch) would otherwise squash it, so they fall outside the frame."""
    finished = result.trials.loc[result.trials["status"] == "finished", "objective"].dropna()
    marks = {name: b.search_score for name, b in result.baselines.items() if b.search_score is not None}
    if finished.empty or not marks:
        return
    best = finished.min() if result.mode == "min" else finished.max()
    worst = max(marks.values()) if result.mode == "min" else min(marks.values())
    far = marks.get("best single epoch", worst)
    span = abs(far - best) or abs(best) * 0.01 or 1.0
    low, high = sorted((best - 0.5 * span, far + 1.5 * span) if result.mode == "min" else (far - 1.5 * span, best + 0.5 * span))
    ax.set_ylim(low, high)  # type: ignore[attr-defined]


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
