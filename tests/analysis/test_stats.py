from __future__ import annotations

import numpy as np
import pymannkendall
import pytest

from analysis.stats import (
    best_smoothed,
    centred_mean,
    centred_std,
    cusum_change_points,
    normalise,
    sliding_mann_kendall,
    sliding_sen_slope,
)


def test_sliding_mann_kendall_matches_pymannkendall_on_every_window() -> None:
    values = np.round(np.random.default_rng(3).normal(size=25), 1)  # rounding makes ties
    s, var_s, p = sliding_mann_kendall(values, 6)
    for start in range(len(values) - 5):
        reference = pymannkendall.original_test(values[start : start + 6])
        assert s[start] == reference.s
        assert var_s[start] == pytest.approx(reference.var_s)
        assert p[start] == pytest.approx(reference.p)


def test_mann_kendall_perfect_trend_of_five_by_hand() -> None:
    # S = 10 pairs all rising, var = 5*4*15/18 = 16.667, z = 9/4.082 = 2.205, p = 0.0275
    s, var_s, p = sliding_mann_kendall(np.array([1.0, 2, 3, 4, 5]), 5)
    assert s[0] == 10 and var_s[0] == pytest.approx(300 / 18)
    assert p[0] == pytest.approx(0.0275, abs=5e-4)


def test_sen_slope_uses_real_epochs() -> None:
    # pairwise slopes: (1-0)/1 = 1, (2-0)/3 = 0.667, (2-1)/2 = 0.5 -> median 0.667
    slope = sliding_sen_slope(np.array([0.0, 1.0, 2.0]), np.array([0, 1, 3]), 3)
    assert slope[0] == pytest.approx(2 / 3)


def test_cusum_finds_a_step() -> None:
    values = np.r_[np.zeros(12), np.ones(8)]
    assert cusum_change_points(values, sigma_floor=0.1) == [12]
    assert cusum_change_points(np.full(20, 0.5), sigma_floor=0.1) == []


def test_centred_mean_keeps_the_window_whole_at_the_ends() -> None:
    # window 3: the first point averages points 0-2 like the second, not a shorter window of its own
    assert centred_mean(np.array([1.0, 2, 3, 4]), 3).tolist() == [2.0, 2.0, 3.0, 3.0]
    assert centred_mean(np.array([0.0, 3, 6, 3, 0, 0, 0]), 5).tolist() == [2.4, 2.4, 2.4, 2.4, 1.8, 1.8, 1.8]
    assert centred_mean(np.array([1.0, 3]), 5).tolist() == [2.0, 2.0]  # window longer than the run
    # the local spread uses the same whole windows: the first point is not "stable" for averaging fewer points
    values = np.array([0.0, 3, 6, 3, 0, 0, 0])
    assert centred_std(values, 5) == pytest.approx([np.std(values[:5])] * 3 + [np.std(values[1:6])] + [np.std(values[2:])] * 3)


def test_best_smoothed_separates_points_sharing_the_end_window_by_their_own_value() -> None:
    raw = np.array([0.2, 0.5, 1.0, 0.4, 0.1, 0.0, 0.0])
    smoothed = centred_mean(raw, 5)
    assert smoothed[0] == smoothed[1] == smoothed[2] == smoothed.max()
    assert best_smoothed(smoothed, raw) == 2
    assert best_smoothed(np.array([1.0, 1.0, 1.0]), np.array([0.5, 0.5, 0.5])) == 1  # full tie: the middle


def test_normalise_scores_a_far_out_warm_up_value_zero() -> None:
    # max mode: quartiles of [-20, 6, 7, 8, 9, 10] (linear) are 6.25 and 8.75, IQR 2.5, far-out
    # fence 6.25 - 3 * 2.5 = -1.25: -20 is outside and scores 0; the scale is 6..10.
    assert normalise(np.array([-20.0, 6, 7, 8, 9, 10]), "max").tolist() == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0]
    # min mode mirrors it: 40 is far out on the worse (high) side.
    assert normalise(np.array([40.0, 4, 3, 2, 1, 0]), "min").tolist() == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0]


def test_normalise_without_outliers_is_plain_min_max() -> None:
    # a U curve has no far-out value: (e-30)^2 over 2..60 -> 1 - (e-30)^2 / 900 (worst at e=60)
    epochs = np.arange(2, 62, 2.0)
    assert np.allclose(normalise((epochs - 30) ** 2, "min"), 1 - (epochs - 30) ** 2 / 900)
