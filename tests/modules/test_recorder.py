"""The Recorder on a tiny real training loop: names, cadence, hand-checked figures, crash safety."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from modules.demo.train import torch_threads
from modules.errors import RunDirError, SpecError
from modules.recorder import Recorder
from modules.rundir.run_dir import RunDir
from modules.spec.schema import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, above all on a busy 2-core machine."""
    with torch_threads(1):
        yield


class Tiny(nn.Module):
    """``body`` (Linear + ReLU with four units) then ``head`` (Linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(1)


def tiny_spec():
    return parse_spec(
        {
            "name": "tiny",
            "model": "tests.tiny:build",
            "data": "tests.tiny:data",
            "evaluate": "tests.tiny:evaluate",
            "groups": {"body": ["body."], "head": ["head."]},
        }
    )


def make_data(n: int = 64):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=gen)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n, generator=gen)
    return x, y


def train_tiny(run: Path, epochs: int = 5, every: int = 2, crash_at: int | None = None):
    """Train Tiny with one full-batch step per epoch; returns what the test computed by hand."""
    torch.manual_seed(0)
    model = Tiny()
    with torch.no_grad():
        # units 0 and 1 output -1 before the ReLU for every input (dead, and their gradients are 0);
        # units 2 and 3 have bias 10 against |w.x| < 5 on these inputs (always active)
        model.body[0].weight[:2].zero_()
        model.body[0].bias.copy_(torch.tensor([-1.0, -1.0, 10.0, 10.0]))
    x, y = make_data()
    xv, yv = make_data(32)
    seen_confusions: list[torch.Tensor] = []

    def evaluate(m: nn.Module, split) -> dict:
        with torch.no_grad():
            pred = m(split[0])
        confusion = torch.zeros(2, 2)
        for t, p in zip((split[1] > 0).long().tolist(), (pred > 0).long().tolist()):
            confusion[t, p] += 1
        seen_confusions.append(confusion)
        per_example = (pred - split[1]) ** 2
        return {"loss": float(per_example.mean()), "toy_confusion": confusion, "per_example_losses": per_example}

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    recorder = Recorder(run, tiny_spec(), model, optimizer, every=every, evaluate=evaluate,
                        val_split=(xv, yv), dead_inputs=xv)
    hand = {"grad_body": {}, "grad_head": {}, "train_loss": {}}
    for epoch in range(1, epochs + 1):
        optimizer.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        if crash_at == epoch:
            raise RuntimeError("crash mid-epoch")
        recorder.after_backward()
        hand["grad_body"][epoch] = torch.cat([p.grad.flatten() for p in model.body.parameters()]).norm().item()
        hand["grad_head"][epoch] = torch.cat([p.grad.flatten() for p in model.head.parameters()]).norm().item()
        optimizer.step()
        recorder.add_train_loss(loss.item(), len(x))
        hand["train_loss"][epoch] = loss.item()
        recorder.end_epoch(epoch)
    hand["confusions"] = seen_confusions
    return hand


def value(frame, epoch, group, metric):
    row = frame[(frame.epoch == epoch) & (frame.group == group) & (frame.metric == metric)]
    assert len(row) == 1, (epoch, group, metric)
    return float(row.value.iloc[0])


def test_recorder_names_cadence_and_hand_checked_values(tmp_path: Path) -> None:
    run = tmp_path / "run"
    hand = train_tiny(run, epochs=5, every=2)
    run_dir = RunDir(run)
    assert run_dir.epochs == [2, 4]
    assert run_dir.groups == ["body", "head"]
    assert load_spec(run / "sweetspot.yaml") == tiny_spec()
    metrics = run_dir.metrics()
    model_metrics = set(metrics[metrics.group == "model"].metric)
    assert model_metrics == {"val_loss", "val_toy_confusion_stability", "train_loss", "lr_0"}
    for group in ("body", "head"):
        assert set(metrics[metrics.group == group].metric) == {
            "grad_norm", "grad_norm_ratio", "update_ratio", "dead_fraction"
        }
    assert sorted(metrics.epoch.unique()) == [2, 4]

    # gradient norms: one step per epoch, so the epoch's mean is that step's norm
    for epoch in (2, 4):
        body, head = hand["grad_body"][epoch], hand["grad_head"][epoch]
        assert value(metrics, epoch, "body", "grad_norm") == pytest.approx(body, rel=1e-6)
        assert value(metrics, epoch, "head", "grad_norm") == pytest.approx(head, rel=1e-6)
        total = math.sqrt(body**2 + head**2)
        assert value(metrics, epoch, "body", "grad_norm_ratio") == pytest.approx(body / total, rel=1e-6)
        assert value(metrics, epoch, "model", "train_loss") == pytest.approx(hand["train_loss"][epoch])
        assert value(metrics, epoch, "model", "lr_0") == pytest.approx(0.01)

    # update ratio from the two saved states, computed here
    for group in ("body", "head"):
        before, after = run_dir.read_group(2, group), run_dir.read_group(4, group)
        diff = math.sqrt(sum(float(((after[k].double() - before[k].double()) ** 2).sum()) for k in before))
        norm = math.sqrt(sum(float((before[k].double() ** 2).sum()) for k in before))
        assert value(metrics, 4, group, "update_ratio") == pytest.approx(diff / norm, rel=1e-9)
        assert math.isnan(value(metrics, 2, group, "update_ratio"))

    # two of body's four ReLU units are dead by construction; head has no activations
    assert value(metrics, 2, "body", "dead_fraction") == 0.5
    assert math.isnan(value(metrics, 2, "head", "dead_fraction"))

    # confusion stability: NaN first, then 1 - mean row total-variation distance
    assert math.isnan(value(metrics, 2, "model", "val_toy_confusion_stability"))
    first, second = (c.numpy() for c in hand["confusions"])
    a = first / first.sum(1, keepdims=True)
    b = second / second.sum(1, keepdims=True)
    expected = 1 - np.mean([0.5 * np.abs(a[i] - b[i]).sum() for i in range(2)])
    assert value(metrics, 4, "model", "val_toy_confusion_stability") == pytest.approx(expected)


def test_recorder_refuses_keys_outside_the_spec(tmp_path: Path) -> None:
    spec = parse_spec({**tiny_spec().model_dump(), "groups": {"body": ["body."]}})
    model = Tiny()
    with pytest.raises(SpecError, match="head.weight"):
        Recorder(tmp_path / "run", spec, model, torch.optim.SGD(model.parameters(), lr=0.1),
                 evaluate=lambda m, s: {}, val_split=())


def test_recorder_refuses_an_existing_run(tmp_path: Path) -> None:
    train_tiny(tmp_path / "run", epochs=2)
    with pytest.raises(RunDirError, match="already holds a run"):
        train_tiny(tmp_path / "run", epochs=2)


def test_exception_mid_loop_leaves_complete_epochs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash mid-epoch"):
        train_tiny(run, epochs=8, every=2, crash_at=5)
    run_dir = RunDir(run)
    assert run_dir.epochs == [2, 4]
    assert sorted(run_dir.metrics().epoch.unique()) == [2, 4]
    assert run_dir.verify() == []


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    torch.set_num_threads(1)
    from modules.recorder import Recorder
    from modules.spec.schema import parse_spec
    spec = parse_spec({"name": "big", "model": "m:b", "data": "m:d", "evaluate": "m:e",
                       "groups": {"a": ["0."], "b": ["2."]}})
    model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 512))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(64, 512)
    rec = Recorder(sys.argv[1], spec, model, opt, every=1,
                   evaluate=lambda m, s: {"loss": float(m(s).pow(2).mean())}, val_split=x, dead_inputs=x)
    epoch = 0
    while True:
        epoch += 1
        opt.zero_grad(); loss = model(x).pow(2).mean(); loss.backward()
        rec.after_backward(); opt.step(); rec.end_epoch(epoch)
    """
)


def test_killed_training_leaves_a_readable_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(run)], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            epochs_dir = run / "epochs"
            if epochs_dir.is_dir() and len(list(epochs_dir.iterdir())) >= 4:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the training subprocess recorded no epochs within 60 s")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a half-written epoch folder is reported, not used
        run_dir = RunDir(run)
    assert len(run_dir.epochs) >= 3
    assert run_dir.verify() == []
    for epoch in run_dir.epochs:
        assert set(run_dir.state_dict(epoch)) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert set(run_dir.metrics().epoch) <= set(run_dir.epochs)


class SequenceBlock(nn.Module):
    """A transformer-style MLP: (batch, seq, features) -> Linear -> GELU, units on the last dim."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2, 3), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def test_dead_fraction_counts_features_of_sequence_outputs():
    from modules.recorder import dead_fractions

    model = SequenceBlock()
    with torch.no_grad():
        model.mlp[0].weight.zero_()
        # feature 0 is -5 at every position (GELU(-5) < 0: dead); features 1 and 2 are +1 (alive)
        model.mlp[0].bias.copy_(torch.tensor([-5.0, 1.0, 1.0]))
    spec = parse_spec(
        {"name": "seq", "model": "a:b", "data": "a:b", "evaluate": "a:b", "groups": {"mlp": ["mlp"]}}
    )
    # 4 examples x 7 positions x 2 inputs: a per-position reading would count 7 units, not 3
    fractions = dead_fractions(model, spec, torch.randn(4, 7, 2), ["mlp"])
    assert fractions["mlp"] == pytest.approx(1 / 3)


def test_an_evaluate_that_switches_to_eval_mode_leaves_training_in_train_mode(tmp_path: Path) -> None:
    # The README's loop calls model.train() once; an evaluate that calls model.eval() and never
    # switches back used to leave every later epoch training in eval mode (dropout off).
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 1))
    model[1].eval()  # a submodule the user keeps in eval mode on purpose stays so
    spec = parse_spec({**tiny_spec().model_dump(), "groups": {"body": ["0."], "head": ["2."]}})
    x, y = make_data()
    seen: list[bool] = []

    def evaluate(m: nn.Module, split) -> dict:
        m.eval()  # and never m.train()
        with torch.no_grad():
            return {"loss": float(((m(split[0]).squeeze(1) - split[1]) ** 2).mean())}

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    recorder = Recorder(tmp_path / "run", spec, model, optimizer, every=1, evaluate=evaluate, val_split=(x, y))
    model.train()
    model[1].eval()
    for epoch in range(1, 4):
        seen.append(model.training)
        optimizer.zero_grad()
        ((model(x).squeeze(1) - y) ** 2).mean().backward()
        recorder.after_backward()
        optimizer.step()
        recorder.end_epoch(epoch)
    assert seen == [True, True, True]
    assert model.training and model[0].training and not model[1].training
