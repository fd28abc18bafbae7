"""PNG bar chart: test objective per candidate, and the combination's difference with its interval."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.evaluation.evaluate import EvaluationResult  # noqa: E402
from modules.atomic import atomic_path  # noqa: E402

VERDICT_COLOURS = {"combination better": "tab:green", "baseline better": "tab:red", "no significant difference": "tab:gray"}


def plot_evaluation(result: EvaluationResult, path: str | os.PathLike[str]) -> None:
    """Left: test objective of every candidate. Right: combination minus each baseline, 95% interval."""
    metric = result.objective_metric
    names = [e.candidate.name for e in result.evaluated]
    values = [e.metrics["test"][metric] for e in result.evaluated]
    height = 1.2 + 0.35 * len(names)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, height), constrained_layout=True)
    colours = ["tab:blue"] + ["tab:orange"] * (len(names) - 1)
    left.barh(range(len(names)), values, color=colours)
    left.set_yticks(range(len(names)), names)
    left.invert_yaxis()
    left.set_xlabel(f"test {metric}")
    left.set_title("Test objective")
    comps = result.comparisons
    means = [c.test_interval.mean_difference for c in comps]
    errors = [
        [c.test_interval.mean_difference - c.test_interval.low for c in comps],
        [c.test_interval.high - c.test_interval.mean_difference for c in comps],
    ]
    right.barh(range(len(comps)), means, xerr=errors, capsize=3, color=[VERDICT_COLOURS[c.verdict] for c in comps])
    right.set_yticks(range(len(comps)), [c.baseline for c in comps])
    right.invert_yaxis()
    right.axvline(0.0, color="black", linewidth=0.8)
    per_example = "loss" if result.per_example_name == "per_example_losses" else result.per_example_name
    right.set_xlabel(f"combination − baseline, test {per_example}\n(95% paired bootstrap interval)")
    right.set_title("Below 0: combination better")
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
