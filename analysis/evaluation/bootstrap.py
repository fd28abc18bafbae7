"""Paired bootstrap interval of a mean difference over examples (seeded, percentile method)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modules.errors import EvaluationError


@dataclass(frozen=True)
class PairedInterval:
    """Mean of ``a - b`` over examples with its bootstrap interval."""

    mean_difference: float
    low: float
    high: float
    confidence: float
    resamples: int

    @property
    def contains_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    def to_json(self) -> dict[str, float | int]:
        return {
            "mean_difference": self.mean_difference,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "resamples": self.resamples,
        }


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 256,
) -> PairedInterval:
    """Resample examples with replacement (the same ones for ``a`` and ``b``); percentile interval."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise EvaluationError(
            f"paired bootstrap needs per-example losses of the same non-zero length, got {a.size} and"
            f" {b.size}; the evaluate callable must return one loss per example of the same split"
        )
    if not 0.0 < confidence < 1.0 or resamples < 1:
        raise EvaluationError(f"confidence must be in (0, 1) and resamples >= 1, got {confidence}, {resamples}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        idx = rng.integers(0, diff.size, size=(count, diff.size))
        means[start : start + count] = diff[idx].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return PairedInterval(float(diff.mean()), float(low), float(high), confidence, resamples)
