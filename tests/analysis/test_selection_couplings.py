"""Every selection the analysis writes passes combine's coupling check without a warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from analysis.errors import AnalysisWarning
from analysis.pipeline import analyze_metrics, analyze_run
from analysis.thresholds import Thresholds
from modules.combine.combine import selection_epochs
from modules.rundir.run_dir import RunDir
from modules.spec.schema import load_spec, parse_spec
from modules.spec.selection import coupling_violations
from tests.analysis._synthetic import EPOCHS, frame, write_run

E = np.array(EPOCHS, dtype=float)
CURVES = {
    "val_loss": 0.2 + (E - 12) ** 2 / 900,  # low at 12
    "val_f1": 0.9 - ((E - 40) / 40) ** 2,  # peak at 40
    "val_acc": np.r_[np.linspace(0.3, 0.8, 10), np.full(20, 0.8)] + 0.002 * np.sin(E),  # plateau 22-60
}


COUPLED = {"pair": ["backbone", "heads"], "triple": ["backbone", "heads", "neck"], "plateau_lead": ["neck", "heads"]}


def spec(gap: int, coupled: list[str]):
    return parse_spec(
        {
            "name": "coupled",
            "model": "tests.modules._tiny:build_model",
            "data": "tests.modules._tiny:load_data",
            "evaluate": "tests.modules._tiny:evaluate",
            "groups": {g: [f"{g}."] for g in ["backbone", "heads", "neck", "free"]},
            "couplings": [{"name": "A", "groups": coupled, "max_epoch_gap": gap}],
            "group_metrics": {
                "backbone": [{"metric": "val_loss", "mode": "min"}],
                "heads": [{"metric": "val_f1", "mode": "max"}],
                "neck": [{"metric": "val_acc", "mode": "max"}],
                "free": [{"metric": "val_acc", "mode": "max"}],
            },
        }
    )


@pytest.mark.parametrize("voting_confidence", [0.5, 1.0], ids=["epochs", "windows"])
@pytest.mark.parametrize("gap", [0, 2, 4, 10])
@pytest.mark.parametrize("coupled", list(COUPLED))
def test_synthetic_selections_keep_their_couplings(tmp_path, gap, voting_confidence, coupled) -> None:
    s = spec(gap, COUPLED[coupled])
    metrics = frame(EPOCHS, CURVES)
    analysis = analyze_metrics(metrics, EPOCHS, list(s.groups), s, Thresholds(voting_confidence=voting_confidence))
    if voting_confidence == 1.0:  # the split vote averages plateau windows: the case issue 7 saw
        assert any(not isinstance(p, int) for p in analysis.picks.values())
    run = RunDir(write_run(tmp_path / "run", s, metrics, EPOCHS))
    assert coupling_violations(selection_epochs(analysis.selection, run), s.couplings) == []


def test_the_demo_selection_keeps_its_couplings(demo_run) -> None:
    run = RunDir(demo_run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        for thresholds in (Thresholds(), Thresholds(voting_confidence=1.0)):
            analysis = analyze_run(run, thresholds=thresholds)
            spec = load_spec(run.spec_path())
            assert coupling_violations(selection_epochs(analysis.selection, run), spec.couplings) == []
