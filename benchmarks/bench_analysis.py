"""Time the sweet-spot analysis (pure path: metrics frame -> recommendations) at 30, 300, 3,000
checkpoints x 8 groups; the target is < 1 s at 30 and a flat per-checkpoint cost."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.pipeline import analyze_metrics  # noqa: E402
from modules.spec.schema import parse_spec  # noqa: E402

GROUPS = [f"group_{i}" for i in range(8)]


def synthetic(n_checkpoints: int, seed: int = 0) -> tuple[pd.DataFrame, list[int], object]:
    """Noisy U-shaped validation curves, one task metric per group, recorded gradient health."""
    rng = np.random.default_rng(seed)
    epochs = np.arange(1, n_checkpoints + 1) * 2
    x = epochs / epochs[-1]
    rows = []

    def add(group: str, metric: str, values: np.ndarray) -> None:
        rows.append(pd.DataFrame({"epoch": epochs, "group": group, "metric": metric, "value": values}))

    add("model", "val_loss", 0.3 + (x - 0.6) ** 2 + rng.normal(0, 0.01, len(x)))
    group_metrics = {}
    for index, group in enumerate(GROUPS):
        peak = 0.3 + 0.05 * index
        add("model", f"val_task_{index}", 0.9 - (x - peak) ** 2 + rng.normal(0, 0.01, len(x)))
        add(group, "grad_norm", 1.0 + rng.normal(0, 0.05, len(x)))
        add(group, "grad_norm_ratio", 0.12 + rng.normal(0, 0.005, len(x)))
        add(group, "update_ratio", 1e-3 * np.exp(-3 * x))
        add(group, "dead_fraction", np.where(x > 0.85, 0.3, 0.02))
        group_metrics[group] = [{"metric": f"val_task_{index}", "mode": "max"}, {"metric": "val_loss", "mode": "min"}]
    spec = parse_spec(
        {
            "name": "bench",
            "model": "bench:model",
            "data": "bench:data",
            "evaluate": "bench:evaluate",
            "groups": {g: [f"{g}."] for g in GROUPS},
            "group_metrics": group_metrics,
        }
    )
    return pd.concat(rows, ignore_index=True), epochs.tolist(), spec


def timed(n_checkpoints: int, repeats: int) -> float:
    metrics, epochs, spec = synthetic(n_checkpoints)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        analyze_metrics(metrics, epochs, GROUPS, spec)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    metrics, epochs, spec = synthetic(30)
    start = time.perf_counter()
    analyze_metrics(metrics, epochs, GROUPS, spec)
    print(f"first call (cold, after imports), 30 checkpoints x 8 groups: {time.perf_counter() - start:.3f} s")
    per_checkpoint = {}
    for n, repeats in ((30, 5), (300, 3), (3000, 1)):
        seconds = timed(n, repeats)
        per_checkpoint[n] = seconds / n
        print(f"{n} checkpoints x {len(GROUPS)} groups: {seconds:.3f} s ({1000 * seconds / n:.2f} ms/checkpoint)")
    ratio = per_checkpoint[3000] / per_checkpoint[30]
    print(f"per-checkpoint cost ratio 3000 / 30: {ratio:.2f} (flat = 1 or below)")
    ok = timed(30, 1) < 1.0
    print("target < 1 s at 30 checkpoints:", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
