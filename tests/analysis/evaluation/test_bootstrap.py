"""Paired bootstrap: covers a known difference, excludes 0 for a large one, includes 0 for none."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.evaluation.bootstrap import paired_bootstrap
from modules.errors import EvaluationError


def test_interval_covers_known_shift_and_excludes_zero() -> None:
    rng = np.random.default_rng(1)
    base = rng.exponential(1.0, size=2000)
    # the combination's losses are the baseline's minus exactly 0.2 plus small paired noise
    comb = base - 0.2 + rng.normal(0.0, 0.05, size=2000)
    interval = paired_bootstrap(comb, base, resamples=1000, seed=0)
    hand_mean = float(np.mean(comb - base))
    assert interval.mean_difference == pytest.approx(hand_mean)
    assert interval.low < -0.2 < interval.high
    assert interval.high < 0 and not interval.contains_zero
    # width close to the normal approximation 2 * 1.96 * sd / sqrt(n)
    expected_width = 2 * 1.96 * np.std(comb - base, ddof=1) / np.sqrt(2000)
    assert interval.high - interval.low == pytest.approx(expected_width, rel=0.15)


def test_no_difference_contains_zero_and_is_seeded() -> None:
    rng = np.random.default_rng(2)
    base = rng.exponential(1.0, size=500)
    comb = base + rng.normal(0.0, 0.3, size=500) * np.where(rng.random(500) < 0.5, 1, -1)
    comb = comb - np.mean(comb - base)  # exactly no mean difference
    first = paired_bootstrap(comb, base, resamples=800, seed=5)
    assert first.contains_zero
    assert first == paired_bootstrap(comb, base, resamples=800, seed=5)
    assert first != paired_bootstrap(comb, base, resamples=800, seed=6)


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(EvaluationError, match="same non-zero length, got 3 and 4"):
        paired_bootstrap(np.zeros(3), np.zeros(4))


@pytest.mark.parametrize("n, shift", [(40, 0.0), (300, -0.1), (2000, 0.05)])
def test_interval_agrees_with_scipy_paired_percentile_bootstrap(n: int, shift: float) -> None:
    from scipy.stats import bootstrap

    rng = np.random.default_rng(n)
    base = rng.exponential(1.0, size=n)
    comb = base + shift + rng.normal(0.0, 0.2, size=n)
    ours = paired_bootstrap(comb, base, resamples=4000, seed=0)
    theirs = bootstrap(
        (comb, base), lambda a, b, axis: np.mean(a - b, axis=axis), paired=True, vectorized=True,
        n_resamples=4000, confidence_level=0.95, method="percentile", random_state=np.random.default_rng(0),
    ).confidence_interval
    # different random streams: the ends agree to within the Monte Carlo error of 4000 resamples
    sd = np.std(comb - base, ddof=1) / np.sqrt(n)
    assert ours.low == pytest.approx(theirs.low, abs=0.1 * sd)
    assert ours.high == pytest.approx(theirs.high, abs=0.1 * sd)
