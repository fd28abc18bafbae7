"""End to end on the demo run: analyse, combine the analysis's selection, evaluate against every baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from modules.demo.model import build_model
from modules.rundir import RunDir
from rayjobs import cli

ROOT = Path(__file__).resolve().parents[2]


def test_demo_analyse_combine_evaluate(demo_run: Path, tmp_path: Path, capsys) -> None:
    analysis = tmp_path / "analysis"
    assert cli.main(["analyze", "--checkpoint-dir", str(demo_run), "--output", str(analysis), "--no-plots"]) == 0
    selection = json.loads((analysis / "selection.json").read_text())
    combined = tmp_path / "combined.safetensors"
    # no --selection and no --group: every group takes the analysis's pick
    code = cli.main(["combine", "--checkpoint-dir", str(demo_run), "--analysis", str(analysis), "--output", str(combined), "--update-bn"])
    assert code == 0, capsys.readouterr().err
    provenance = json.loads(load_file_metadata(combined))
    assert provenance["selection"] == selection and provenance["update_bn"] is True
    state = load_file(combined)
    build_model().load_state_dict(state, strict=True)
    run = RunDir(demo_run)
    picked = {g: c for g, c in selection.items() if isinstance(c, int)}
    for group, epoch in picked.items():
        if group != "backbone":  # BatchNorm lives in the backbone; its statistics were recomputed
            for key, tensor in run.read_group(epoch, group).items():
                assert torch.equal(state[key], tensor), key

    out = tmp_path / "eval"
    code = cli.main(["evaluate", "--checkpoint-dir", str(demo_run), "--model", str(combined), "--analysis", str(analysis),
                     "--output", str(out), "--resamples", "300", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "evaluation.json").read_text())
    kinds = [c["kind"] for c in data["candidates"]]
    assert kinds == ["combination", "single", "single", "single", "best_single", "last", "plateau", "uniform", "lawa", "greedy"]
    assert [c["name"] for c in data["candidates"][1:4]] == ["epoch 30", "epoch 40", "epoch 50"]
    assert len(data["comparisons"]) == 9
    assert data["combination_provenance"]["selection"] == selection
    for cand in data["candidates"]:
        assert {"loss"} <= set(cand["metrics"]["test"]) and len(cand["metrics"]["test"]) > 3
    report = (out / "evaluation_report.md").read_text()
    assert "| candidate | test loss | val loss |" in report and "greedy soup" in report
    assert (out / "evaluation.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "evaluation.png").stat().st_size > 5000


def load_file_metadata(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        return handle.metadata()["sweetspot_provenance"]


def test_seed_form_and_refusals(demo_run: Path, tmp_path: Path) -> None:
    run = RunDir(demo_run)
    for epoch in (40, 44):
        torch.save({"epoch": epoch, "model_state_dict": run.state_dict(epoch)}, tmp_path / f"checkpoint_epoch_{epoch}.pt")
    out = tmp_path / "combined_model.pt"
    command = [sys.executable, "-m", "rayjobs.combine_modules", "--spec", str(demo_run / "sweetspot.yaml"),
               "--backbone", str(tmp_path / "checkpoint_epoch_44.pt"), "--heads", str(tmp_path / "checkpoint_epoch_40.pt"),
               "--default", str(tmp_path / "checkpoint_epoch_40.pt"), "--output", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    state = torch.load(out, weights_only=True)
    assert torch.equal(state["backbone.0.weight"], run.read_tensor(44, "backbone", "backbone.0.weight"))
    assert torch.equal(state["heads.emotion.0.weight"], run.read_tensor(40, "heads", "heads.emotion.0.weight"))
    assert json.loads(Path(f"{out}.provenance.json").read_text())["selection"]["backbone"].endswith("checkpoint_epoch_44.pt")

    without_default = command[:-4] + ["--output", str(tmp_path / "x.pt")]
    done = subprocess.run(without_default, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "no checkpoint given for groups ['analyzers', 'dsp_kalman'" in done.stderr

    inside = cli.main(["combine", "--checkpoint-dir", str(demo_run), "--group", "backbone=44", "--output", str(demo_run / "c.safetensors")])
    assert inside == 2


def test_seed_form_takes_unnamed_groups_from_the_analysis(tmp_path: Path, capsys) -> None:
    from rayjobs import combine_modules
    from tests.modules import _tiny

    run = RunDir(_tiny.record_run(tmp_path / "run", epochs=4))
    seed = tmp_path / "seed"
    seed.mkdir()
    for epoch in run.epochs:
        torch.save({"epoch": epoch, "model_state_dict": run.state_dict(epoch)}, seed / f"checkpoint_epoch_{epoch}.pt")
    analysis = tmp_path / "analysis"
    analysis.mkdir()
    (analysis / "selection.json").write_text(json.dumps({"encoder": 1, "middle": 2, "head": 3}))
    out = tmp_path / "combined_model.pt"
    base = ["--spec", str(run.path / "sweetspot.yaml"), "--head", str(seed / "checkpoint_epoch_4.pt"), "--analysis", str(analysis)]
    assert combine_modules.main([*base, "--output", str(out)]) == 0, capsys.readouterr().err
    state = torch.load(out, weights_only=True)
    for group, epoch in {"encoder": 1, "middle": 2, "head": 4}.items():  # the named --head wins over the pick
        for key, tensor in run.read_group(epoch, group).items():
            assert torch.equal(state[key], tensor), key

    (seed / "checkpoint_epoch_2.pt").unlink()
    assert combine_modules.main([*base, "--output", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "picks epoch 2 for group 'middle'" in err and "no checkpoint_epoch_2.pt" in err and "--middle FILE" in err
    assert not (tmp_path / "x.pt").exists()


def test_help_shows_examples_of_both_forms(capsys) -> None:
    from rayjobs import combine_modules, evaluate_combined

    for main, needles in [
        (cli.main, ["sweetspot analyze", "sweetspot combine --checkpoint-dir"]),
        (combine_modules.main, ["--group backbone=44", "--backbone checkpoint_epoch_44.pt", "--analysis DIR"]),
        (evaluate_combined.main, ["--model combined_model.pt", "greedy soup", "held-out test split"]),
    ]:
        try:
            main(["--help"])
        except SystemExit as done:
            assert done.code == 0
        text = capsys.readouterr().out
        for needle in needles:
            assert needle in text, (main, needle)
