"""The user's own workflow document, end to end on seed-layout files (checkpoint_epoch_<N>.pt):
analyse -> combine with per-group files -> evaluate against the baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modules.combine.provenance import read_provenance
from modules.rundir.run_dir import RunDir
from rayjobs import analyze_sweetspots, combine_modules, evaluate_combined


@pytest.fixture(scope="module")
def seed_folder(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo run exported the way the seed's training script saved it: full wrapped state dicts
    every 2 epochs plus a wide metrics.csv (no gradient figures, as in an imported run)."""
    run = RunDir(demo_run)
    folder = tmp_path_factory.mktemp("seed") / "checkpoints_final"
    folder.mkdir()
    for epoch in run.epochs:
        torch.save(
            {"epoch": epoch, "model_state_dict": run.state_dict(epoch), "optimizer_state_dict": {"lr": 1e-3}},
            folder / f"checkpoint_epoch_{epoch}.pt",
        )
    metrics = run.metrics()
    wide = metrics[metrics["group"] == "model"].pivot(index="epoch", columns="metric", values="value")
    wide.reset_index().to_csv(folder / "metrics.csv", index=False)
    return folder


def test_seed_workflow_analyse_combine_evaluate(seed_folder: Path, demo_run: Path, tmp_path: Path) -> None:
    spec = demo_run / "sweetspot.yaml"
    analysis = tmp_path / "analysis_results"
    assert analyze_sweetspots.main(
        ["--checkpoint-dir", str(seed_folder), "--spec", str(spec), "--output", str(analysis), "--no-plots"]
    ) == 0
    metrics = json.loads((analysis / "module_metrics.json").read_text())
    assert metrics["groups"]["backbone"]["health_source"] == "weights"  # no recorded gradients here
    selection = json.loads((analysis / "selection.json").read_text())

    # the seed's phase 3.3 command: named groups from files, the rest from the analysis's picks
    combined = tmp_path / "combined_model.pt"
    assert combine_modules.main(
        [
            "--spec", str(spec),
            "--backbone", str(seed_folder / "checkpoint_epoch_44.pt"),
            "--heads", str(seed_folder / "checkpoint_epoch_40.pt"),
            "--analyzers", str(seed_folder / "checkpoint_epoch_46.pt"),
            "--analysis", str(analysis),
            "--output", str(combined),
        ]
    ) == 0
    provenance = read_provenance(combined)
    assert provenance["selection"]["backbone"].endswith("checkpoint_epoch_44.pt")
    # the epoch of each seed file is read from its checkpoint_epoch_<N> name
    assert [s["epoch"] for s in provenance["sources"]["backbone"]] == [44]
    assert [s["epoch"] for s in provenance["sources"]["heads"]] == [40]
    state = torch.load(combined, weights_only=True)
    run = RunDir(demo_run)
    for key, tensor in run.read_group(44, "backbone").items():
        assert torch.equal(state[key], tensor)
    for group, picked in selection.items():  # groups not named take the analysis's pick
        if group in ("backbone", "heads", "analyzers"):
            continue
        if isinstance(picked, int):
            for key, tensor in run.read_group(picked, group).items():
                assert torch.equal(state[key], tensor)
        else:
            window = [e for e in run.epochs if picked["average"][0] <= e <= picked["average"][1]]
            for key, tensor in run.read_group(window[0], group).items():
                if tensor.is_floating_point():
                    mean = sum(run.read_group(e, group)[key].double() for e in window) / len(window)
                    assert torch.allclose(state[key].double(), mean, atol=1e-6)
                else:
                    assert torch.equal(state[key], run.read_group(window[-1], group)[key])

    # the seed's phase 4.1 command, on the same seed folder (imported on the fly)
    evaluation = tmp_path / "eval"
    assert evaluate_combined.main(
        [
            "--model", str(combined), "--checkpoint-dir", str(seed_folder), "--spec", str(spec),
            "--analysis", str(analysis), "--output", str(evaluation), "--resamples", "200", "--no-progress",
        ]
    ) == 0
    report = json.loads((evaluation / "evaluation.json").read_text())
    kinds = {c["kind"] for c in report["candidates"]}
    assert {"combination", "single", "best_single", "last", "plateau", "uniform", "lawa", "greedy"} <= kinds
    assert report["run_dir"] == str(seed_folder)
    text = (evaluation / "evaluation_report.md").read_text()
    assert text.startswith("# Evaluation")
    assert "combined from checkpoint files: backbone 44, heads 40, analyzers 46, " in text


def test_evaluate_on_a_seed_folder_needs_the_spec(seed_folder: Path, tmp_path: Path, capsys) -> None:
    # a missing --model is said first, plainly (nothing is imported)
    code = evaluate_combined.main(
        ["--model", str(tmp_path / "unused.pt"), "--checkpoint-dir", str(seed_folder), "--output", str(tmp_path / "e")]
    )
    assert code == 2
    assert f"--model {tmp_path / 'unused.pt'} does not exist" in capsys.readouterr().err
    model = tmp_path / "combined_model.pt"
    model.write_bytes((seed_folder / "checkpoint_epoch_44.pt").read_bytes())
    code = evaluate_combined.main(
        ["--model", str(model), "--checkpoint-dir", str(seed_folder), "--output", str(tmp_path / "e")]
    )
    assert code == 2
    assert "pass --spec sweetspot.yaml" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
