"""The Hugging Face Trainer's layout on a real run of transformers' Trainer (a BERT from a config)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sweetspot
from modules.errors import CheckpointImportError
from rayjobs import cli
from tests.modules.importing.layouts._conformance import assert_conforms
from tests.modules.importing.layouts._runs import bert_spec, build_bert, same_bits, train_bert


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory) -> Path:
    return train_bert(tmp_path_factory.mktemp("hf") / "out")


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "out"))


def _history(run: Path) -> list[dict]:
    last = max(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return json.loads((last / "trainer_state.json").read_text())["log_history"]


class _Hostile:
    """Unpickling this runs a command that leaves a marker file: any load of it is a failure."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def test_a_trainer_run_imports_bit_exactly_with_its_logged_metrics(hf_run: Path, tmp_path: Path) -> None:
    folders = sorted(hf_run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    expected = {epoch: load_file(folder / "model.safetensors") for epoch, folder in enumerate(folders, start=1)}
    history = _history(hf_run)
    metrics = {}
    for entry in history:
        epoch = round(entry["epoch"])
        if "eval_loss" in entry:
            metrics[epoch, "eval_loss"] = entry["eval_loss"]
        if "loss" in entry:
            metrics[epoch, "train_loss"] = entry["loss"]
            metrics[epoch, "learning_rate"] = entry["learning_rate"]
    report, run = assert_conforms("hf-trainer", hf_run, tmp_path / "run", bert_spec(), expected, "epoch", metrics)
    assert run.epoch_entry(1).source == "model.safetensors"
    analysis = sweetspot.analyze(tmp_path / "run")  # judged by the Trainer's eval_loss, named as it is
    assert set(analysis.groups) == {"embeddings", "encoder", "pooler", "classifier"}
    assert all(r.series.judging[0].metric == "eval_loss" for r in analysis.groups.values())


def test_the_trainers_other_pickles_are_never_opened(hf_run: Path, tmp_path: Path) -> None:
    source = _copy(hf_run, tmp_path)
    marker = tmp_path / "ran"
    for folder in source.glob("checkpoint-*"):
        for name in ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
            with open(folder / name, "wb") as handle:
                pickle.dump(_Hostile(marker), handle)
    sweetspot.import_run(source, bert_spec(), tmp_path / "run")
    assert not marker.exists()


def test_deleted_early_checkpoints_and_missing_trainer_state_are_said(hf_run: Path, tmp_path: Path) -> None:
    source = _copy(hf_run, tmp_path)
    for step in (2, 4):  # save_total_limit deletes the oldest
        shutil.rmtree(source / f"checkpoint-{step}")
    report = sweetspot.import_run(source, bert_spec(), tmp_path / "run")
    assert report.epochs == [3, 4, 5]
    assert "epochs [1, 2] have no checkpoint folder (save_total_limit" in report.summary()
    for state in source.glob("checkpoint-*/trainer_state.json"):
        state.unlink()
    report = sweetspot.import_run(source, bert_spec(), tmp_path / "bare")
    assert report.index == "step" and report.epochs == [6, 8, 10]
    assert "metrics: none; no checkpoint-<step>/ folder holds trainer_state.json" in report.summary()
    assert sweetspot.RunDir(tmp_path / "bare").metrics().empty


def test_sharded_and_bin_checkpoints_and_a_missing_shard(hf_run: Path, tmp_path: Path) -> None:
    source = _copy(hf_run, tmp_path)
    model = build_bert()
    expected = {}
    for epoch, folder in enumerate(sorted(source.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])), start=1):
        state = load_file(folder / "model.safetensors")
        (folder / "model.safetensors").unlink()
        model.load_state_dict(state)
        if epoch % 2:
            model.save_pretrained(folder, max_shard_size="10KB")  # model-0000k-of-0000n.safetensors + index
        else:
            torch.save(model.state_dict(), folder / "pytorch_model.bin")
        expected[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
    assert len(list((source / "checkpoint-2").glob("model-0000*-of-*.safetensors"))) > 1
    run = sweetspot.import_run(source, bert_spec(), tmp_path / "run")
    stored = sweetspot.RunDir(tmp_path / "run")
    for epoch, state in expected.items():
        got = stored.state_dict(epoch)
        assert all(same_bits(got[k], state[k]) for k in got), epoch
    assert run.epochs == [1, 2, 3, 4, 5]
    shard = sorted((source / "checkpoint-6").glob("model-0000*-of-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(CheckpointImportError, match=rf"model.safetensors.index.json lists shards \['{shard.name}'\]"):
        sweetspot.import_run(source, bert_spec(), tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_a_run_saved_by_steps_keeps_steps_and_the_cli_imports_it(tmp_path: Path, capsys) -> None:
    source = train_bert(tmp_path / "steps", epochs=2, save_strategy="steps", save_steps=3, eval_strategy="steps", eval_steps=3)
    spec_file = tmp_path / "sweetspot.yaml"
    spec_file.write_text(_spec_yaml())
    code = cli.main(["import", "--from", str(source), "--spec", str(spec_file), "--out", str(tmp_path / "run"),
                     "--layout", "hf-trainer", "--no-progress"])
    assert code == 0
    assert "imported 2 steps [3, 4] from" in capsys.readouterr().out
    assert sweetspot.RunDir(tmp_path / "run").index == "step"


def _spec_yaml() -> str:
    return (
        "name: bert-tiny\nmodel: tests.modules.importing.layouts._runs:build_bert\n"
        "groups: {embeddings: ['bert.embeddings.'], encoder: ['bert.encoder.'], pooler: ['bert.pooler.'],"
        " classifier: ['classifier.']}\n"
    )
