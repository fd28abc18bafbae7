"""The transferable calibration on planted landscapes, in process: the best crossover pairs a late
encoder with an early classifier while every single checkpoint (what per-epoch metrics and the
greedy soup see) is best in the middle. Fitted on one training, the automatic selection reaches a
second training's best crossover within its budget."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from analysis.thresholds import Thresholds
from modules.spec.schema import Coupling
from search.calibration.calibration_file import (
    Calibration,
    CalibrationFileError,
    FittedRun,
    fit_priors,
    load_calibration,
)
from search.calibration.refine import BudgetedScore, automatic_selection

EPOCHS = list(range(2, 62, 2))
GROUPS = ["encoder", "classifier", "decoder"]
WEIGHTS = {"encoder": 4.0, "classifier": 2.0, "decoder": 1.0}


def landscape(best: dict[str, int]):
    """Loss: a bowl per group around ``best`` (checkpoint indices), plus an interaction that keeps
    single checkpoints (all groups at one index) far from the crossover optimum."""

    def loss(selection: dict[str, list[int]]) -> float:
        total = 1.0
        for group, chosen in selection.items():
            centre = sum(EPOCHS.index(e) for e in chosen) / len(chosen)
            total += WEIGHTS[group] * ((centre - best[group]) / len(EPOCHS)) ** 2
            total -= 0.0005 * (len(chosen) > 1) * (abs(centre - best[group]) < 1)  # averaging helps a little at the best
        return total

    return loss


FIRST = {"encoder": 28, "classifier": 3, "decoder": 15}   # epochs 58, 8, 32
SECOND = {"encoder": 25, "classifier": 8, "decoder": 13}  # epochs 52, 18, 28: another seed


def exhaustive_best(loss) -> tuple[dict[str, list[int]], float]:
    best = min(
        ({g: [e] for g, e in zip(GROUPS, choice)} for choice in itertools.product(EPOCHS, repeat=len(GROUPS))),
        key=loss,
    )
    return best, loss(best)


def test_fitted_on_one_training_auto_reaches_the_best_crossover_of_another_within_its_budget() -> None:
    first, second = landscape(FIRST), landscape(SECOND)
    pick, _ = exhaustive_best(first)  # what a full search of the first training found
    priors = fit_priors(BudgetedScore(first, 10_000), EPOCHS, GROUPS, pick, "min")
    assert priors["encoder"].sensitivity > priors["decoder"].sensitivity  # the heavier bowl matters more

    truth, truth_value = exhaustive_best(second)
    score = BudgetedScore(second, 3 * len(EPOCHS))
    per_epoch_pick = {g: [30] for g in GROUPS}  # where per-epoch metrics point: the middle
    chosen = automatic_selection(score, EPOCHS, GROUPS, "min", priors, {"the thresholds' pick": per_epoch_pick})
    assert chosen.evaluations <= 90 and score.spent == chosen.evaluations
    assert chosen.soup_complete
    best_single = min(second({g: [e] for g in GROUPS}) for e in EPOCHS)
    assert chosen.value <= chosen.soup.objective and chosen.value < best_single
    # at the truth's single-epoch choice, or an average around it that is at least as good
    assert chosen.value <= truth_value + 1e-9
    for group in GROUPS:
        centre = sum(chosen.selection[group]) / len(chosen.selection[group])
        assert abs(centre - truth[group][0]) <= 2


def test_without_priors_it_is_the_guard_alone_and_never_worse_than_the_greedy_soup() -> None:
    second = landscape(SECOND)
    score = BudgetedScore(second, 2 * len(EPOCHS))
    chosen = automatic_selection(score, EPOCHS, GROUPS, "min")
    assert chosen.value == min(chosen.references.values())
    assert chosen.value <= chosen.soup.objective and chosen.evaluations <= 2 * len(EPOCHS)


def test_the_budget_is_counted_and_memo_hits_are_free() -> None:
    calls: list[dict] = []

    def counted(selection: dict[str, list[int]]) -> float:
        calls.append(selection)
        return landscape(SECOND)(selection)

    score = BudgetedScore(counted, 3)
    one = {g: [2] for g in GROUPS}
    assert score(one) == score(one) and score.spent == 1
    score({g: [4] for g in GROUPS}), score({g: [6] for g in GROUPS})
    assert score({g: [8] for g in GROUPS}) is None and score.spent == 3 == len(calls)
    # the budget ends inside the greedy soup: the soup stops there, the guard still holds what was scored
    short = BudgetedScore(landscape(SECOND), len(EPOCHS) + 2)
    chosen = automatic_selection(short, EPOCHS, GROUPS, "min")
    assert not chosen.soup_complete and short.spent == len(EPOCHS) + 2


def test_groups_coupled_with_no_gap_move_together() -> None:
    first = landscape(FIRST)
    pick, _ = exhaustive_best(first)
    pick["classifier"] = pick["encoder"]  # what a search under the coupling picks
    priors = fit_priors(BudgetedScore(first, 10_000), EPOCHS, GROUPS, pick, "min")
    coupling = Coupling(name="A", groups=["encoder", "classifier"], max_epoch_gap=0)
    seen: list[dict] = []

    def recording(selection: dict[str, list[int]]) -> float:
        seen.append(selection)
        return landscape(SECOND)(selection)

    automatic_selection(BudgetedScore(recording, 90), EPOCHS, GROUPS, "min", priors, couplings=[coupling])
    assert seen and all(s["encoder"] == s["classifier"] for s in seen)


def _calibration(**changes) -> dict:
    priors = fit_priors(BudgetedScore(landscape(FIRST), 10_000), EPOCHS, GROUPS, exhaustive_best(landscape(FIRST))[0], "min")
    calibration = Calibration(
        objective={"metric": "loss", "mode": "min"}, groups=GROUPS, thresholds=Thresholds(), priors=priors,
        fitted_on=[FittedRun(run="runs/a", search="search_a", manifest_sha256="0" * 16, checkpoints=30)],
    )
    return {**json.loads(calibration.model_dump_json()), **changes}


def test_the_calibration_file_round_trips_and_bad_files_are_refused_by_name(tmp_path: Path) -> None:
    good = tmp_path / "calibration.json"
    good.write_text(json.dumps(_calibration()))
    loaded = load_calibration(good)
    assert loaded.groups == GROUPS and loaded.priors["encoder"].centre == pytest.approx(28 / 29)
    cases = {
        "thresholds.json": (Thresholds().to_json(), "not a sweetspot calibration file"),
        "v9.json": (_calibration(version=9), "version 9"),
        "badprior.json": (_calibration(priors={g: {"centre": 2.0} for g in GROUPS}), r"priors\.encoder\.centre"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(json.dumps(content))
        with pytest.raises(CalibrationFileError, match=message):
            load_calibration(tmp_path / name)
    with pytest.raises(CalibrationFileError, match="does not exist"):
        load_calibration(tmp_path / "missing.json")
    with pytest.raises(CalibrationFileError, match=r"has groups \['backbone'\] but the calibration was fitted"):
        loaded.check_groups(["backbone"], "run runs/x")
