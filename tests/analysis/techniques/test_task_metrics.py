from __future__ import annotations

import numpy as np

from analysis.techniques import get_technique
from tests.analysis._synthetic import EPOCHS, context_for

E = np.array(EPOCHS, dtype=float)


def test_single_metric_peak() -> None:
    # F1 peaks at 36; the centred moving average of a parabola is the parabola shifted down by a
    # constant away from the ends, so the smoothed peak stays at 36.
    f1 = 0.9 - ((E - 36) / 40) ** 2
    context = context_for({"val_loss": 1 - f1, "val_f1": f1}, [("val_f1", "max")])
    rec = get_technique("task_metrics").recommend(context)
    assert rec.epoch == 36
    assert rec.reasons[0] == "task val_f1 peak 0.900 at epoch 36"


def test_balance_of_two_metrics_by_hand() -> None:
    # a = accuracy peaking at 30, b = rmse lowest at 42. Normalised over epochs 2..60:
    # good_a = 1 - (e-30)^2/900 (farthest point e=60), good_b = 1 - (e-42)^2/1600 (farthest e=2).
    # d/de of the sum = 0 at 1600(e-30) = -900(e-42) -> e = 85800/2500 = 34.32; the recorded
    # epoch nearest on that symmetric parabola is 34.
    accuracy = 0.9 - (E - 30) ** 2 / 2000
    rmse = 0.1 + (E - 42) ** 2 / 5000
    context = context_for(
        {"val_loss": rmse, "val_acc": accuracy, "val_rmse": rmse}, [("val_acc", "max"), ("val_rmse", "min")]
    )
    rec = get_technique("task_metrics").recommend(context)
    assert rec.epoch == 34
    assert rec.details["metric_peaks"] == {"val_acc": 30, "val_rmse": 42}
    assert "task val_rmse low 0.100 at epoch 42" in rec.reasons


def test_balance_with_figures_leads_when_several_metrics_judge() -> None:
    # same curves as above: the pick 34 has accuracy 0.9 - 16/2000 = 0.892, rmse 0.1 + 64/5000 = 0.1128
    accuracy = 0.9 - (E - 30) ** 2 / 2000
    rmse = 0.1 + (E - 42) ** 2 / 5000
    context = context_for(
        {"val_loss": rmse, "val_acc": accuracy, "val_rmse": rmse}, [("val_acc", "max"), ("val_rmse", "min")]
    )
    rec = get_technique("task_metrics").recommend(context)
    assert rec.reasons[0].startswith("balanced score ")
    assert "at epoch 34 (val_acc 0.892, val_rmse 0.113;" in rec.reasons[0]
