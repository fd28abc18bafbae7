"""The public API end to end on a tiny real run: import -> analyze -> combine -> evaluate, in memory
and written, checked against tensors read straight from the run's files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sweetspot
from tests.modules import _tiny

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny.record_run(tmp_path_factory.mktemp("api") / "run", epochs=8)


@pytest.fixture(scope="module")
def analysis(tiny_run: Path) -> sweetspot.RunAnalysis:
    return sweetspot.analyze(tiny_run)


def stored(run: Path, epoch: int, group: str) -> dict[str, torch.Tensor]:
    """A group's tensors read straight from the run's file, independent of the code under test."""
    return load_file(run / "epochs" / str(epoch) / f"{group}.safetensors")


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_all_names_the_public_surface() -> None:
    required = {
        "load_spec", "Spec", "RunDir", "RunWriter", "Recorder", "import_run", "analyze", "combine", "evaluate",
        "Selection", "Thresholds", "load_selection", "load_thresholds", "RunAnalysis", "CombineResult",
        "Evaluation", "EvaluationResult", "__version__",
    }
    assert required <= set(sweetspot.__all__)
    assert len(sweetspot.__all__) == len(set(sweetspot.__all__))
    for name in sweetspot.__all__:
        assert getattr(sweetspot, name) is not None, name
    assert sweetspot.__version__.count(".") == 2


def test_import_pulls_in_neither_pyplot_nor_ray_nor_optuna() -> None:
    code = (
        "import sys, sweetspot; "
        "print([m for m in sys.modules if m.split('.')[0] in ('ray', 'optuna') or m == 'matplotlib.pyplot'])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_analyze_writes_only_when_asked(tiny_run: Path, analysis: sweetspot.RunAnalysis, tmp_path: Path) -> None:
    before = files_under(tiny_run)
    assert set(analysis.groups) == {"encoder", "middle", "head"}
    assert set(analysis.selection.root) == {"encoder", "middle", "head"}
    assert files_under(tiny_run) == before and list(tmp_path.iterdir()) == []
    written = sweetspot.analyze(sweetspot.RunDir(tiny_run), output=tmp_path / "a", plots=False)
    assert json.loads((tmp_path / "a" / "selection.json").read_text()) == written.selection.to_json()
    assert written.selection == analysis.selection


def test_combine_in_memory_then_written(tiny_run: Path, tmp_path: Path) -> None:
    result = sweetspot.combine(tiny_run, {"encoder": 2, "middle": {"average": [3, 5]}, "head": 7})
    assert result.output is None and list(tmp_path.iterdir()) == []
    state = result.state_dict
    for group, epoch in {"encoder": 2, "head": 7}.items():
        for key, tensor in stored(tiny_run, epoch, group).items():
            assert torch.equal(state[key], tensor), key
    for key in stored(tiny_run, 3, "middle"):
        mean = sum(stored(tiny_run, e, "middle")[key].double() for e in (3, 4, 5)) / 3
        assert torch.allclose(state[key].double(), mean, atol=1e-6), key
    assert result.provenance["sources"]["middle"][1]["epoch"] == 4

    path = result.write(tmp_path / "combined.safetensors")
    written = load_file(path)
    assert written.keys() == state.keys() and all(torch.equal(written[k], state[k]) for k in state)
    assert sweetspot.combine(tiny_run, {"encoder": 2, "middle": {"average": [3, 5]}, "head": 7}).provenance["format"] is None
    streamed = sweetspot.combine(tiny_run, result.plan.choices, tmp_path / "s.pt")
    assert streamed.state_dict is None and streamed.provenance["format"] == "pt"
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_combine_fills_unnamed_groups_from_the_analysis(
    tiny_run: Path, analysis: sweetspot.RunAnalysis
) -> None:
    result = sweetspot.combine(tiny_run, {"head": 1}, analysis=analysis, update_bn=True, trust_run_spec=True)
    picks = analysis.selection.to_json()
    assert result.choices == {**picks, "head": 1}
    assert result.batchnorm_recomputed is not None


def test_combine_checkpoint_files_per_group(tiny_run: Path, tmp_path: Path) -> None:
    run = sweetspot.RunDir(tiny_run)
    for epoch in (3, 6):
        torch.save({"model_state_dict": run.state_dict(epoch)}, tmp_path / f"checkpoint_epoch_{epoch}.pt")
    result = sweetspot.combine(
        files={"encoder": tmp_path / "checkpoint_epoch_3.pt"}, default=tmp_path / "checkpoint_epoch_6.pt",
        spec=_tiny.spec(),
    )
    for group, epoch in {"encoder": 3, "middle": 6, "head": 6}.items():
        for key, tensor in stored(tiny_run, epoch, group).items():
            assert torch.equal(result.state_dict[key], tensor), key
    assert [s["epoch"] for s in result.provenance["sources"]["encoder"]] == [3]


def test_evaluate_a_selection_and_a_combined_file(
    tiny_run: Path, analysis: sweetspot.RunAnalysis, tmp_path: Path
) -> None:
    analysis_dir = tmp_path / "analysis"
    sweetspot.analyze(tiny_run, output=analysis_dir, plots=False)
    evaluation = sweetspot.evaluate(tiny_run, {"encoder": 8, "middle": 8, "head": 8}, analysis=analysis_dir, resamples=50, trust_run_spec=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analysis"]
    kinds = {item.candidate.kind for item in evaluation.result.evaluated}
    assert {"combination", "best_single", "uniform", "lawa", "greedy"} <= kinds
    by_kind = {item.candidate.kind: item for item in evaluation.result.evaluated}
    # the combination is epoch 8 everywhere: the same model as the last epoch (and as the single
    # epochs 30, 40, 50, whose nearest recorded is 8), evaluated once and never compared with itself
    combination = by_kind["combination"].candidate
    assert {"last epoch (8)", "epoch 8"} <= set(combination.aliases)
    assert combination.name.startswith("combination = ")
    assert not any("last epoch" in c.baseline for c in evaluation.result.comparisons)
    paths = evaluation.write(tmp_path / "eval")
    data = json.loads(paths["json"].read_text())
    assert data["combination_selection"] == {"encoder": 8, "middle": 8, "head": 8}

    model = sweetspot.combine(tiny_run, {"encoder": 8, "middle": 8, "head": 8}, tmp_path / "c.safetensors")
    from_file = sweetspot.evaluate(tiny_run, model.output, analysis=analysis, resamples=50, output=tmp_path / "eval2", trust_run_spec=True)
    kinds = {i.candidate.kind: i for i in from_file.result.evaluated}
    assert kinds["combination"].metrics["test"] == by_kind["combination"].metrics["test"]
    assert kinds["combination"].candidate.name == combination.name  # the file's provenance names the same epochs
    assert (tmp_path / "eval2" / "evaluation.json").is_file()


def test_import_run_from_checkpoint_files(tiny_run: Path, tmp_path: Path) -> None:
    run = sweetspot.RunDir(tiny_run)
    seed = tmp_path / "seed"
    seed.mkdir()
    for epoch in run.epochs:
        torch.save({"epoch": epoch, "model_state_dict": run.state_dict(epoch)}, seed / f"checkpoint_epoch_{epoch}.pt")
    report = sweetspot.import_run(seed, tiny_run / "sweetspot.yaml", tmp_path / "imported")
    imported = sweetspot.RunDir(report.out)
    assert imported.epochs == run.epochs == report.epochs
    for key, tensor in stored(tiny_run, 5, "middle").items():
        assert torch.equal(imported.read_group(5, "middle")[key], tensor)


def test_errors_name_the_argument_and_the_command_line_names_the_option(tiny_run: Path, tmp_path: Path, capsys) -> None:
    from rayjobs import cli

    with pytest.raises(sweetspot.SweetspotError, match=rf"^output {re.escape(str(tmp_path))} is a folder") as caught:
        sweetspot.combine(tiny_run, {"encoder": 1, "middle": 1, "head": 1}, tmp_path)
    assert caught.value.param == "output"
    assert str(caught.value).startswith(f"output {tmp_path} is a folder")
    code = cli.main(["combine", "--checkpoint-dir", str(tiny_run), "--group", "encoder=1", "--output", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err.startswith(f"error: --output {tmp_path} is a folder")
