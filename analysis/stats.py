"""Vectorised statistics over sliding windows: Mann-Kendall, Sen's slope, CUSUM, smoothing.

The sliding-window versions compute every window at once with numpy (cost O(n * w^2) for n
points and window w); they give the same S, variance and p-value as pymannkendall's
``original_test`` on each window, which the tests check.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.stats import norm

from modules.spec.schema import loss_sign

#: Significance level of the Mann-Kendall trend test.
TREND_ALPHA = 0.05


#: Tukey's far-out fence: a value more than this many IQRs beyond the quartiles on the worse side
#: (a warm-up checkpoint) scores 0 instead of stretching the scale of every other checkpoint.
FAR_OUT_IQR = 3.0


def normalise(values: np.ndarray, mode: str) -> np.ndarray:
    """Min-max to [0, 1] with 1 = best (``mode`` 'min' or 'max'); flat -> all 1.

    The worst end is the worst value inside Tukey's far-out fence, so a warm-up outlier
    scores 0 without compressing the rest of the run into a sliver near 1.
    """
    good = np.asarray(values, dtype=float) * -loss_sign(mode)
    q1, q3 = np.nanpercentile(good, [25, 75])
    inside = good[good >= q1 - FAR_OUT_IQR * (q3 - q1)]
    low, high = np.nanmin(inside), np.nanmax(good)
    if not high > low:
        return np.ones_like(good)
    return np.clip((good - low) / (high - low), 0.0, 1.0)


def _pair_indices(window: int) -> tuple[np.ndarray, np.ndarray]:
    first, second = np.triu_indices(window, k=1)
    return first, second


def sliding_mann_kendall(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window of ``window`` consecutive points: Mann-Kendall S, variance of S (tie-corrected), p."""
    windows = sliding_window_view(np.asarray(values, dtype=float), window)
    first, second = _pair_indices(window)
    s = np.sign(windows[:, second] - windows[:, first]).sum(axis=1)
    # Tie correction: sum over tie groups of t(t-1)(2t+5) = sum over points of f(t)/t.
    group_size = (windows[:, :, None] == windows[:, None, :]).sum(axis=2).astype(float)
    ties = ((group_size - 1) * (2 * group_size + 5)).sum(axis=1)
    var_s = (window * (window - 1) * (2 * window + 5) - ties) / 18.0
    safe_var = np.where(var_s > 0, var_s, 1.0)
    z = np.where(s > 0, (s - 1) / np.sqrt(safe_var), np.where(s < 0, (s + 1) / np.sqrt(safe_var), 0.0))
    z = np.where(var_s > 0, z, 0.0)
    p = 2 * norm.sf(np.abs(z))
    return s, var_s, p


def sliding_sen_slope(values: np.ndarray, epochs: np.ndarray, window: int) -> np.ndarray:
    """Per window: Sen's slope, the median of pairwise slopes per epoch (uneven spacing allowed)."""
    windows = sliding_window_view(np.asarray(values, dtype=float), window)
    x = sliding_window_view(np.asarray(epochs, dtype=float), window)
    first, second = _pair_indices(window)
    slopes = (windows[:, second] - windows[:, first]) / (x[:, second] - x[:, first])
    return np.median(slopes, axis=1)


def sliding_variance(values: np.ndarray, window: int) -> np.ndarray:
    """Population variance of each window."""
    return sliding_window_view(np.asarray(values, dtype=float), window).var(axis=1)


def _window_starts(n: int, window: int) -> tuple[np.ndarray, int]:
    """First index of each point's window: centred, slid inwards at the ends so it stays whole."""
    window = max(1, min(window, n))
    return np.clip(np.arange(n) - (window - 1) // 2, 0, n - window), window


def centred_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Moving average over ``window`` checkpoints centred on each point; near the ends the window
    slides inwards and stays whole, so every point's average counts the same number of checkpoints.

    A window truncated at the run's start would let the first checkpoint average fewer, nearer
    points than its neighbours and win on that alone; points that share the end window tie, and
    ``best_smoothed`` separates them by their own values.
    """
    values = np.asarray(values, dtype=float)
    starts, window = _window_starts(len(values), window)
    cumsum = np.concatenate([[0.0], np.cumsum(values)])
    return (cumsum[starts + window] - cumsum[starts]) / window


def centred_std(values: np.ndarray, window: int) -> np.ndarray:
    """Moving standard deviation over the same whole windows as ``centred_mean``."""
    values = np.asarray(values, dtype=float)
    starts, window = _window_starts(len(values), window)
    cumsum = np.concatenate([[0.0], np.cumsum(values)])
    cumsq = np.concatenate([[0.0], np.cumsum(values**2)])
    mean = (cumsum[starts + window] - cumsum[starts]) / window
    var = np.maximum((cumsq[starts + window] - cumsq[starts]) / window - mean**2, 0.0)
    return np.sqrt(var)


def best_smoothed(smoothed: np.ndarray, raw: np.ndarray, tolerance: float = 1e-9) -> int:
    """Index of the best ``smoothed`` value; among ties (points sharing an end window), the one with
    the best ``raw`` value, and among those the middle one."""
    smoothed = np.asarray(smoothed, dtype=float)
    tied = np.flatnonzero(smoothed >= np.nanmax(smoothed) - tolerance)
    raw_tied = np.asarray(raw, dtype=float)[tied]
    best = tied[raw_tied >= np.nanmax(raw_tied) - tolerance]
    return int(best[(len(best) - 1) // 2])


def noise_sigma(values: np.ndarray) -> float:
    """Robust noise level from first differences (MAD / 0.6745 / sqrt 2)."""
    diffs = np.diff(np.asarray(values, dtype=float))
    if len(diffs) == 0:
        return 0.0
    mad = np.median(np.abs(diffs - np.median(diffs)))
    return float(mad / 0.6745 / np.sqrt(2))


#: 95% critical value of the sup of a Brownian bridge (Kolmogorov): max|CUSUM| / (sigma sqrt n).
CUSUM_CRITICAL = 1.358


def cusum_change_points(values: np.ndarray, sigma_floor: float, min_segment: int = 2) -> list[int]:
    """Indices where a new level starts, by binary segmentation of the CUSUM of the mean.

    A split is kept when max |S_t| / (sigma * sqrt(n)) exceeds the 95% Brownian-bridge
    bound; sigma is the robust noise level, at least ``sigma_floor``.
    """
    values = np.asarray(values, dtype=float)
    sigma = max(noise_sigma(values), sigma_floor, 1e-12)
    found: list[int] = []
    pending = [(0, len(values))]
    while pending:
        start, stop = pending.pop()
        segment = values[start:stop]
        n = len(segment)
        if n < 2 * min_segment:
            continue
        cusum = np.cumsum(segment - segment.mean())[:-1]
        candidates = np.arange(1, n)
        allowed = (candidates >= min_segment) & (candidates <= n - min_segment)
        if not allowed.any():
            continue
        scores = np.where(allowed, np.abs(cusum), -1.0)
        split = int(np.argmax(scores)) + 1
        if scores[split - 1] / (sigma * np.sqrt(n)) <= CUSUM_CRITICAL:
            continue
        found.append(start + split)
        pending += [(start, start + split), (start + split, stop)]
    return sorted(found)


def snap_to_epoch(value: float, epochs: np.ndarray) -> int:
    """The recorded epoch nearest to ``value`` (the earlier one on a tie)."""
    epochs = np.asarray(epochs)
    return int(epochs[int(np.argmin(np.abs(epochs - value)))])


def middle_of_best(scores: np.ndarray, tolerance: float = 1e-9) -> int:
    """Index of the best score; among ties (within ``tolerance``), the middle one."""
    best = np.nanmax(scores)
    tied = np.flatnonzero(scores >= best - tolerance)
    return int(tied[(len(tied) - 1) // 2])
