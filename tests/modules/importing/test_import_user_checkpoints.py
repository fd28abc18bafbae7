"""Import as users' checkpoints really are: other names, Lightning files, extras beside the weights,
a spec without data/evaluate, and the temporaries of failed or killed imports."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import modules.importing.importer as importer
from modules.errors import CheckpointImportError, SpecError
from modules.importing.importer import import_checkpoints
from modules.rundir.run_dir import RunDir
from modules.spec.schema import parse_spec
from rayjobs import import_run
from tests.modules.importing.test_importer import SPEC_DATA, _same_bits, _train_states

SPEC = parse_spec(SPEC_DATA, "test spec")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _assert_imported(out, saved: dict[int, dict[str, torch.Tensor]]) -> None:
    run = RunDir(out)
    assert run.epochs == sorted(saved)
    for epoch, state in saved.items():
        stored = run.state_dict(epoch)
        assert sorted(stored) == sorted(state)
        assert all(_same_bits(stored[k], t) for k, t in state.items()), epoch
    assert run.verify() == []


def test_lightning_checkpoints_import_out_of_the_box(tmp_path) -> None:
    """Lightning writes epoch=<N>-step=<M>.ckpt with the weights under 'state_dict' and hyper-parameters beside them."""
    source = tmp_path / "lightning"
    source.mkdir()
    saved = {}
    for epoch, (state, optim) in _train_states([1, 2, 3]).items():
        torch.save(
            {
                "epoch": epoch,
                "global_step": 100 * (epoch + 1),
                "state_dict": state,
                "optimizer_states": [optim],
                "hyper_parameters": argparse.Namespace(lr=0.01, width=16),
                "callbacks": {"ModelCheckpoint": {"best_model_score": np.float32(0.5)}},
            },
            source / f"epoch={epoch}-step={100 * (epoch + 1)}.ckpt",
        )
        saved[epoch] = state
    (source / "last.ckpt").write_bytes((source / "epoch=3-step=400.ckpt").read_bytes())
    report = import_checkpoints(source, SPEC, tmp_path / "run", progress=False)
    assert report.epochs == [1, 2, 3]
    _assert_imported(tmp_path / "run", saved)
    assert "argparse.Namespace" in report.skipped_globals
    assert "left out non-tensor entries of type argparse.Namespace" in report.summary()


@pytest.mark.parametrize(
    ("name", "pattern", "fmt"),
    [
        ("epoch_{}.pt", "epoch_{epoch}.pt", "pt"),
        ("step-{}.ckpt", "step-{epoch}.ckpt", "pt"),
        ("model_e{}.safetensors", r"model_e(?P<epoch>\d+)\.safetensors", "safetensors"),
    ],
)
def test_other_names_import_with_a_pattern_and_the_error_says_so(tmp_path, name: str, pattern: str, fmt: str) -> None:
    source = tmp_path / "seed"
    source.mkdir()
    saved = {}
    scale = 500 if "step" in name else 1  # step-500.ckpt, step-1500.ckpt
    for trained, (state, _) in _train_states([1, 3]).items():
        epoch = trained * scale
        path = source / name.format(epoch)
        if fmt == "safetensors":
            save_file(state, path)
        else:
            torch.save({"model_state_dict": state, "best_acc": np.float64(0.9)}, path)
        saved[epoch] = state
    with pytest.raises(CheckpointImportError, match=r"holds no checkpoints in a layout(.|\n)*pass --pattern.*'epoch_\{epoch\}.pt'"):
        import_checkpoints(source, SPEC, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    report = import_checkpoints(source, SPEC, tmp_path / "run", pattern=pattern, progress=False)
    assert report.epochs == sorted(saved)
    _assert_imported(tmp_path / "run", saved)


def test_cli_pattern_and_allow_global(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "seed"
    source.mkdir()
    states = _train_states([2, 4])
    for epoch, (state, _) in states.items():
        torch.save({"model": state, "args": argparse.Namespace(lr=0.1)}, source / f"epoch_{epoch}.pt")
    spec_file = tmp_path / "sweetspot.yaml"
    spec_file.write_text(
        "name: tiny\nmodel: tests.modules.importing.test_importer:TinyNet\n"
        "groups: {backbone: ['backbone.'], head: ['head.'], embed: ['embed*']}\n"
    )
    argv = ["--from", str(source), "--spec", str(spec_file), "--out", str(tmp_path / "run"), "--quiet"]
    code = import_run.main([*argv, "--pattern", "epoch_{epoch}.pt", "--allow-global", "argparse.Namespace"])
    assert code == 0, capsys.readouterr().err
    assert "imported 2 epochs [2, 4]" in capsys.readouterr().out
    _assert_imported(tmp_path / "run", {e: s for e, (s, _) in states.items()})


def test_a_spec_without_data_or_evaluate_imports_and_the_steps_that_need_them_say_so(tmp_path) -> None:
    source = tmp_path / "seed"
    source.mkdir()
    for epoch, (state, _) in _train_states([1, 2]).items():
        torch.save(state, source / f"checkpoint_epoch_{epoch}.pt")
    spec = parse_spec({k: v for k, v in SPEC_DATA.items() if k not in ("data", "evaluate")}, "test spec")
    import_checkpoints(source, spec, tmp_path / "run", progress=False)
    assert RunDir(tmp_path / "run").epochs == [1, 2]
    with pytest.raises(SpecError, match="has no 'data' callable.*add `data: package.module:function`"):
        spec.load_data()
    with pytest.raises(SpecError, match="has no 'evaluate' callable"):
        spec.evaluator()


def test_an_error_midway_removes_the_import_folder(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "seed"
    source.mkdir()
    for epoch, (state, _) in _train_states([1, 2, 3]).items():
        torch.save(state, source / f"checkpoint_epoch_{epoch}.pt")
    real = importer.RunWriter.write_epoch

    def failing(self, epoch, *args, **kwargs):
        if epoch == 2:
            raise OSError(28, "No space left on device")
        return real(self, epoch, *args, **kwargs)

    monkeypatch.setattr(importer.RunWriter, "write_epoch", failing)
    with pytest.raises(OSError, match="No space left"):
        import_checkpoints(source, SPEC, tmp_path / "run", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed"]


def test_a_killed_imports_folder_is_removed_by_the_next_import(tmp_path) -> None:
    source = tmp_path / "seed"
    source.mkdir()
    for epoch, (state, _) in _train_states([1, 2]).items():
        torch.save(state, source / f"checkpoint_epoch_{epoch}.pt")
    stale = tmp_path / f"run.partial-{_dead_pid()}"
    (stale / "epochs").mkdir(parents=True)
    live = tmp_path / f"run.partial-{os.getppid()}"  # a live process's import is left alone
    live.mkdir()
    report = import_checkpoints(source, SPEC, tmp_path / "run", progress=False)
    assert report.removed_leftovers == [str(stale)]
    assert f"removed {stale}" in report.summary()
    assert not stale.exists() and live.exists()


_KILLED_IMPORT = """
import sys, time
import modules.importing.importer as importer
from modules.spec.schema import parse_spec
from tests.modules.importing.test_importer import SPEC_DATA
real = importer.RunWriter.write_epoch
def slow(self, epoch, *args, **kwargs):
    real(self, epoch, *args, **kwargs)
    print("wrote", epoch, flush=True)
    time.sleep(60)
importer.RunWriter.write_epoch = slow
importer.import_checkpoints(sys.argv[1], parse_spec(SPEC_DATA, "spec"), sys.argv[2], progress=False)
"""


def test_after_kill_9_of_an_import_the_next_import_removes_its_folder(tmp_path) -> None:
    source = tmp_path / "seed"
    source.mkdir()
    saved = {}
    for epoch, (state, _) in _train_states([1, 2]).items():
        torch.save(state, source / f"checkpoint_epoch_{epoch}.pt")
        saved[epoch] = state
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_IMPORT, str(source), str(out)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline().split() == ["wrote", "1"]
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    leftover = tmp_path / f"run.partial-{child.pid}"
    assert leftover.is_dir() and not out.exists()
    report = import_checkpoints(source, SPEC, out, progress=False)
    assert report.removed_leftovers == [str(leftover)] and not leftover.exists()
    _assert_imported(out, saved)
