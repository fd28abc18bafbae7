"""The embedded demo: data, model size, spec coverage, evaluate vs hand computations, a real run."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from modules.demo.data import TASKS, DemoSplit, batches, load_splits
from modules.demo.evaluate import evaluate
from modules.demo.model import DemoModel, build_model, count_parameters
from modules.demo.spec import GROUPS
from modules.errors import RunDirError
from modules.rundir.run_dir import RunDir
from modules.spec.schema import load_spec
from rayjobs import train_demo as train_demo_cli


def test_data_is_deterministic_and_masked() -> None:
    first, again, other = load_splits(0), load_splits(0), load_splits(1)
    for name in ("train", "val", "test"):
        assert torch.equal(first[name].x, again[name].x)
        assert torch.equal(first[name].labels["emotion"], again[name].labels["emotion"])
    assert not torch.equal(first["train"].x, other["train"].x)
    train = first["train"]
    assert int(train.masks["emotion"].sum()) < int(train.masks["surd"].sum()) < len(train)
    assert bool(train.masks["bentham"].all())
    assert all(bool(first["val"].masks[t].all()) for t in TASKS)
    inputs = list(batches(first["val"], batch_size=300))
    assert torch.equal(torch.cat([x for x, _ in inputs]), first["val"].x)
    assert inputs[0][1].shape == (300, first["val"].signal.shape[1])


def test_widths_reach_100m_and_250m_parameters() -> None:
    with torch.device("meta"):
        default, mid, large = DemoModel(64), DemoModel(1280), DemoModel(2048)
    assert count_parameters(default) < 1_000_000
    assert count_parameters(mid) >= 100_000_000
    assert count_parameters(large) >= 250_000_000
    assert count_parameters(large) * 4 >= 1_000_000_000


def test_spec_assigns_every_key_to_exactly_one_group(demo_spec) -> None:
    keys = list(build_model(width=16).state_dict().keys())
    assigned = demo_spec.assign_groups(keys)
    assert list(assigned) == GROUPS
    assert all(assigned[g] for g in GROUPS), "every group holds some keys"
    flat = [k for g in GROUPS for k in assigned[g]]
    assert sorted(flat) == sorted(keys)
    assert all(k.startswith(g + ".") for g in GROUPS for k in assigned[g])
    assert any(k.endswith("running_mean") for k in assigned["backbone"])
    assert "dsp_kalman.kalman.log_process_noise" in assigned["dsp_kalman"]
    assert [c.groups for c in demo_spec.couplings] == [["backbone", "heads"], ["analyzers"], ["dsp_kalman"]]


class FixedOutputs(nn.Module):
    """A module whose outputs are given tensors (to check the metrics on known predictions)."""

    def __init__(self, outputs: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.outputs = outputs

    def forward(self, x: torch.Tensor, signal: torch.Tensor) -> dict[str, torch.Tensor]:
        n = x.shape[0]
        start = int(x[0, 0])
        return {k: v[start : start + n] for k, v in self.outputs.items()}


def test_evaluate_matches_hand_computations() -> None:
    n = 10
    gen = torch.Generator().manual_seed(3)
    true_emotion = [0, 0, 1, 1, 2, 2, 3, 4, 5, 5]
    pred_emotion = [0, 1, 1, 1, 2, 0, 3, 3, 5, 2]
    emotion_logits = torch.randn(n, 6, generator=gen)
    for i, p in enumerate(pred_emotion):
        emotion_logits[i, p] = 10.0
    true_surd = [0, 1, 2, 3, 0, 1, 2, 3, 0, 0]
    pred_surd = [0, 1, 2, 2, 0, 1, 3, 3, 1, 0]
    surd_logits = torch.randn(n, 4, generator=gen)
    for i, p in enumerate(pred_surd):
        surd_logits[i, p] = 10.0
    bentham_true = torch.randn(n, generator=gen)
    bentham_pred = torch.randn(n, generator=gen)
    regret_true = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1, 1], dtype=torch.float32)
    regret_logit = torch.tensor([2.0, -1.0, -0.5, 3.0, 0.2, -2.0, 1.0, -0.1, 0.7, -3.0])
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, 24)  # x[:, 0] = example index
    split = DemoSplit(
        x, torch.zeros(n, 32),
        {"emotion": torch.tensor(true_emotion), "bentham": bentham_true,
         "surd": torch.tensor(true_surd), "regret": regret_true},
    )
    model = FixedOutputs({"emotion": emotion_logits, "bentham": bentham_pred, "surd": surd_logits,
                          "regret": regret_logit})
    model.train()
    metrics = evaluate(model, split)
    assert model.training, "evaluate restores train mode"
    model.eval()
    evaluate(model, split)
    assert not model.training, "evaluate restores eval mode"

    # macro-F1 over the 6 classes, by hand
    f1s = []
    for c in range(6):
        tp = sum(t == c and p == c for t, p in zip(true_emotion, pred_emotion))
        fp = sum(t != c and p == c for t, p in zip(true_emotion, pred_emotion))
        fn = sum(t == c and p != c for t, p in zip(true_emotion, pred_emotion))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    assert metrics["emotion_f1"] == pytest.approx(sum(f1s) / 6)
    expected_confusion = np.zeros((6, 6))
    for t, p in zip(true_emotion, pred_emotion):
        expected_confusion[t, p] += 1
    assert np.array_equal(metrics["emotion_confusion"].numpy(), expected_confusion)

    # cross-entropy from log-sum-exp written out
    def ce(logits: torch.Tensor, label: int) -> float:
        row = logits.double().tolist()
        return math.log(sum(math.exp(v) for v in row)) - row[label]

    emotion_losses = [ce(emotion_logits[i], true_emotion[i]) for i in range(n)]
    surd_losses = [ce(surd_logits[i], true_surd[i]) for i in range(n)]
    bentham_losses = [(float(bentham_pred[i]) - float(bentham_true[i])) ** 2 for i in range(n)]
    regret_losses = []
    for logit, label in zip(regret_logit.tolist(), regret_true.tolist()):
        prob = 1 / (1 + math.exp(-logit))
        regret_losses.append(-(label * math.log(prob) + (1 - label) * math.log(1 - prob)))
    assert metrics["emotion_loss"] == pytest.approx(np.mean(emotion_losses), rel=1e-5)
    assert metrics["surd_loss"] == pytest.approx(np.mean(surd_losses), rel=1e-5)
    assert metrics["bentham_loss"] == pytest.approx(np.mean(bentham_losses), rel=1e-5)
    assert metrics["regret_loss"] == pytest.approx(np.mean(regret_losses), rel=1e-5)
    per_example = [sum(v) for v in zip(emotion_losses, surd_losses, bentham_losses, regret_losses)]
    assert metrics["per_example_losses"].shape == (n,)
    assert np.allclose(metrics["per_example_losses"].numpy(), per_example, rtol=1e-5)
    assert metrics["loss"] == pytest.approx(np.mean(per_example), rel=1e-5)
    assert float(metrics["per_example_losses"].mean()) == pytest.approx(metrics["loss"], rel=1e-6)

    assert metrics["bentham_rmse"] == pytest.approx(math.sqrt(np.mean(bentham_losses)), rel=1e-5)
    assert metrics["bentham_corr"] == pytest.approx(np.corrcoef(bentham_pred, bentham_true)[0, 1], rel=1e-5)
    assert metrics["surd_accuracy"] == pytest.approx(np.mean([t == p for t, p in zip(true_surd, pred_surd)]))
    joint = np.zeros((4, 4))
    for t, p in zip(true_surd, pred_surd):
        joint[t, p] += 1 / n
    mi = sum(
        joint[a, b] * math.log(joint[a, b] / (joint[a].sum() * joint[:, b].sum()))
        for a in range(4) for b in range(4) if joint[a, b] > 0
    )
    assert metrics["surd_mi"] == pytest.approx(mi)
    regret_hits = [(logit > 0) == (label == 1) for logit, label in zip(regret_logit.tolist(), regret_true.tolist())]
    assert metrics["regret_cf_accuracy"] == pytest.approx(np.mean(regret_hits))


def best_epoch(frame, metric: str, mode: str) -> int:
    series = frame[(frame.group == "model") & (frame.metric == metric)].set_index("epoch").value
    return int(series.idxmin() if mode == "min" else series.idxmax())


def test_demo_run_trains_and_groups_peak_at_different_epochs(demo_run: Path, demo_spec) -> None:
    run = RunDir(demo_run)
    assert run.epochs == list(range(2, 61, 2))
    assert run.groups == GROUPS
    assert load_spec(demo_run / "sweetspot.yaml") == demo_spec
    metrics = run.metrics()
    best = {
        group: best_epoch(metrics, demo_spec.judging_metrics(group)[0].metric, demo_spec.judging_metrics(group)[0].mode)
        for group in GROUPS
    }
    assert len(set(best.values())) >= 3, best
    val = metrics[metrics.group == "model"].pivot(index="epoch", columns="metric", values="value")
    # the small, noisy emotion task overfits: its validation loss falls, then rises well above its minimum
    emotion = val["val_emotion_loss"]
    assert emotion.iloc[0] > emotion.min() and emotion.idxmin() < 30
    assert emotion.iloc[-1] > 1.5 * emotion.min()
    # Bentham (all labels, little noise) keeps improving late; training loss falls throughout
    rmse = val["val_bentham_rmse"]
    assert rmse[rmse.index > 30].min() < rmse[rmse.index <= 20].min()
    assert val["train_loss"].iloc[-1] < 0.3 * val["train_loss"].iloc[0]
    assert val["val_emotion_confusion_stability"].iloc[1:].between(0, 1).all()
    per_group = metrics[metrics.group == "backbone"].pivot(index="epoch", columns="metric", values="value")
    assert (per_group["grad_norm"] > 0).all()
    assert per_group["update_ratio"].iloc[1:].between(0, 1).all()


def test_train_demo_cli_refuses_a_non_empty_out(tmp_path: Path, capsys) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert train_demo_cli.main(["--out", str(out), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert str(out) in error and "not empty" in error and "another path" in error
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_train_demo_cli_short_run(tmp_path: Path, capsys) -> None:
    out = tmp_path / "short"
    assert train_demo_cli.main(["--out", str(out), "--epochs", "2", "--every", "1", "--no-progress"]) == 0
    assert RunDir(out).epochs == [1, 2]
    assert (out / "sweetspot.yaml").is_file()
    assert str(out) in capsys.readouterr().out


def _recorded(out: Path) -> list[int]:
    try:
        return RunDir(out).epochs
    except RunDirError:  # no manifest, or no epoch in it yet
        return []


def test_train_demo_reuse_keeps_a_complete_run_and_retrains_one_a_kill_left_incomplete(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--out", str(out), "--width", "8", "--epochs", "20", "--every", "1", "--reuse", "--no-progress"]
    killed = subprocess.Popen([sys.executable, "-m", "rayjobs.train_demo", *args], cwd=Path(__file__).resolve().parents[3])
    deadline = time.monotonic() + 120
    while not _recorded(out):  # killed once an epoch is recorded
        assert killed.poll() is None and time.monotonic() < deadline, "train-demo ended before it could be killed"
        time.sleep(0.05)
    killed.kill()
    killed.wait()
    assert len(RunDir(out).epochs) < 20
    assert train_demo_cli.main([*args[:3], "16", *args[4:]]) == 2  # another model's run: never deleted
    assert train_demo_cli.main(args) == 0
    assert RunDir(out).epochs == list(range(1, 21))
    manifest = (out / "manifest.json").stat().st_mtime_ns
    assert train_demo_cli.main(args) == 0  # complete: kept as it is
    assert (out / "manifest.json").stat().st_mtime_ns == manifest


def test_recorded_state_reproduces_recorded_validation_loss(demo_run: Path) -> None:
    run = RunDir(demo_run)
    spec = load_spec(run.spec_path())
    model = spec.build_model()
    model.load_state_dict(run.state_dict(20))
    metrics = spec.evaluator()(model, spec.load_data()["val"])
    recorded = run.metrics()
    row = recorded[(recorded.epoch == 20) & (recorded.group == "model") & (recorded.metric == "val_loss")]
    assert metrics["loss"] == pytest.approx(float(row.value.iloc[0]), rel=1e-5)
    assert metrics["loss"] != pytest.approx(evaluate(build_model(), load_splits(0)["val"])["loss"], rel=1e-3)
