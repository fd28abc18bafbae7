from __future__ import annotations

import numpy as np

from analysis.techniques import get_technique
from tests.analysis._synthetic import EPOCHS, context_for

E = np.array(EPOCHS, dtype=float)


def recommend(loss: np.ndarray):
    return get_technique("plateau").recommend(context_for({"val_loss": loss}, [("val_loss", "min")]))


def test_clean_plateau_recommends_its_centre() -> None:
    # loss falls 1.0 -> 0.2 over epochs 2..20, stays 0.2 to 40, rises back to 1.0 by 60 (mirror image).
    # Goodness slope outside 20..40 is 1/18 per epoch >> 0.01, so flat windows hug [20, 40]; at most one
    # sloped point fits in a flat window (two give a median slope of 1/36 > 0.01): plateau within
    # [18, 42], and by symmetry its centre is 30.
    loss = np.interp(E, [2, 20, 40, 60], [1.0, 0.2, 0.2, 1.0])
    rec = recommend(loss)
    first, last = rec.details["plateau_window"]
    assert 18 <= first <= 20 and 40 <= last <= 42 and first + last == 60
    assert rec.epoch == 30
    assert rec.reasons[0] == f"plateau {first}-{last}, centre 30"
    assert rec.confidence > 0.5


def test_u_shaped_minimum() -> None:
    # goodness = 1 - (e-30)^2/900; Sen's slope of a 5-window centred at c is -2(c-30)/900, so
    # |slope| <= 0.01 needs |c-30| <= 4.5 (centres 26..34); the windows centred at 26 and 34 are
    # strictly monotone (S = +-10, p = 0.027 < 0.05): flat windows are centred at 28, 30, 32,
    # so the plateau is 24-36 with centre 30.
    rec = recommend((E - 30) ** 2 / 900)
    assert rec.details["plateau_window"] == [24, 36]
    assert rec.epoch == 30


def test_step_change_picks_the_better_level_after_the_change_point() -> None:
    # loss 0.8 up to epoch 30 and 0.2 from 32: CUSUM puts the change at 32; both levels are flat
    # but the later one is better, so the plateau is 32-60 and its centre (32+60)/2 = 46.
    rec = recommend(np.where(E <= 30, 0.8, 0.2))
    assert rec.details["change_points"] == [32]
    assert rec.details["plateau_window"] == [32, 60]
    assert rec.epoch == 46


def test_noisy_monotone_decline_has_no_plateau() -> None:
    # loss falls 1/60 per epoch over a range of 0.97: goodness slope ~1/58 = 0.017 > 0.01 in every
    # window (noise of 0.005 moves a 5-window Sen slope by well under 0.005), so no plateau; the
    # fallback is the best smoothed epoch, at the end of the run.
    noise = np.random.default_rng(0).normal(0, 0.005, len(E))
    rec = recommend(1 - E / 60 + noise)
    assert rec.details["plateau_window"] is None
    assert rec.reasons[0].startswith("no plateau")
    assert rec.epoch >= 56
    assert rec.confidence == 0.15


def test_tighter_improvement_rate_shrinks_the_plateau() -> None:
    from analysis.thresholds import Thresholds

    # with improvement_rate 0.003 only |c-30| <= 1.35 passes: the single window centred at 30 (26-34)
    context = context_for({"val_loss": (E - 30) ** 2 / 900}, [("val_loss", "min")], thresholds=Thresholds(improvement_rate=0.003))
    rec = get_technique("plateau").recommend(context)
    assert rec.details["plateau_window"] == [26, 34]


def test_warm_up_outlier_does_not_flatten_a_curve_that_still_improves() -> None:
    # loss 10 at epoch 2 (warm-up), then 2.0 - 0.02/epoch with +-0.03 alternating noise: still
    # improving 0.02 per epoch. Scaled by the whole range (10 - 0.85 = 9.15) that is 0.0022/epoch,
    # "flat"; the far-out fence drops the warm-up from the scale (range ~1.18), so every window's
    # |Sen's slope| is ~0.02 / 1.18 = 0.017 > 0.01: no plateau, and the best is at the end.
    from analysis.techniques.plateau import scan_plateaus
    from analysis.thresholds import Thresholds

    wiggle = np.where((E / 2) % 2 == 0, 0.03, -0.03)
    loss = np.where(E == 2, 10.0, 2.0 - 0.02 * (E - 4) + wiggle)
    whole_range = (loss.max() - loss) / (loss.max() - loss.min())
    assert scan_plateaus(whole_range, E, Thresholds(), 5).plateau is not None  # what the naive scale says
    rec = recommend(loss)
    assert rec.details["plateau_window"] is None
    assert rec.epoch >= 56
