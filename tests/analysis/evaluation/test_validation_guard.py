"""The validation guard keeps the best on validation of the given picks and the greedy soup; each
value is what the combined model scores on validation, computed here through combine + evaluate."""

from __future__ import annotations

from pathlib import Path

from analysis.evaluation.validation_guard import GREEDY_SOUP, best_on_validation
from modules.combine.combine import combine
from modules.combine.model_fit import load_file_into_model
from modules.rundir.run_dir import RunDir
from modules.spec.selection import parse_selection
from tests.modules import _tiny


def _val_of_combined(run: RunDir, selection, tmp: Path) -> float:
    output = tmp / "combined.safetensors"
    combine(run, selection, output, spec=_tiny.spec(), update_bn=True)
    model = _tiny.build_model()
    load_file_into_model(output, model)
    return _tiny.evaluate(model, _tiny.load_data()["val"])["loss"]


def test_the_guard_keeps_the_best_on_validation_of_the_picks_and_the_greedy_soup(tmp_path: Path) -> None:
    run = RunDir(_tiny.record_run(tmp_path / "run"))
    picks = {
        "early": parse_selection({g: run.epochs[0] for g in run.groups}),
        "late window": parse_selection({g: {"average": [run.epochs[-3], run.epochs[-1]]} for g in run.groups}),
    }
    choice = best_on_validation(run, _tiny.spec(), picks, update_bn=True)
    assert set(choice.val) == {"early", "late window", GREEDY_SOUP}
    for name, selection in choice.candidates.items():
        assert choice.val[name] == _val_of_combined(run, selection, tmp_path), name
    assert choice.val[choice.name] == min(choice.val.values())
    assert choice.selection is choice.candidates[choice.name]


def test_the_guard_takes_device_auto_as_auto_passes_it_on_gpu_nodes(tmp_path: Path) -> None:
    run = RunDir(_tiny.record_run(tmp_path / "run"))
    picks = {"early": parse_selection({g: run.epochs[0] for g in run.groups})}
    assert best_on_validation(run, _tiny.spec(), picks, update_bn=True, device="auto").val == best_on_validation(
        run, _tiny.spec(), picks, update_bn=True, device="cpu"
    ).val  # "auto" is this machine's device (no GPU here): the same scores
