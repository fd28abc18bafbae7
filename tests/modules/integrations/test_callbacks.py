"""The recording callbacks write, while the real frameworks train, a run that `sweetspot analyze` reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from modules.rundir.run_dir import RunDir
from rayjobs import cli
from tests.modules.importing.layouts._runs import BERT_SPEC, MLP_SPEC, train_bert, train_lightning


def _spec_file(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "sweetspot.yaml"
    path.write_text(json.dumps(data))  # YAML reads JSON
    return path


def test_hf_callback_records_a_run_that_analyze_reads(tmp_path: Path, capsys) -> None:
    from sweetspot.integrations.hf import SweetspotCallback

    spec = _spec_file(tmp_path, BERT_SPEC)
    train_bert(tmp_path / "out", callbacks=[SweetspotCallback(tmp_path / "run", spec)], save_strategy="no")
    run = RunDir(tmp_path / "run")
    assert run.epochs == [1, 2, 3, 4, 5] and run.groups == ["embeddings", "encoder", "pooler", "classifier"]
    metrics = run.metrics()
    names = set(metrics["metric"])
    assert {"eval_loss", "train_loss", "learning_rate", "lr_0", "grad_norm", "update_ratio", "dead_fraction"} <= names
    assert "eval_runtime" not in names
    eval_loss = metrics[metrics["metric"] == "eval_loss"].sort_values("epoch")
    assert eval_loss["epoch"].tolist() == [1, 2, 3, 4, 5] and eval_loss["value"].notna().all()
    code = cli.main(["analyze", "--checkpoint-dir", str(tmp_path / "run"), "--output", str(tmp_path / "analysis"), "--no-plots"])
    assert code == 0, capsys.readouterr().err
    picks = json.loads((tmp_path / "analysis" / "selection.json").read_text())
    assert set(picks) == {"embeddings", "encoder", "pooler", "classifier"}


def test_lightning_callback_records_a_run_that_analyze_reads(tmp_path: Path, capsys) -> None:
    from sweetspot.integrations.lightning import SweetspotCallback

    spec = _spec_file(tmp_path, MLP_SPEC)
    train_lightning(tmp_path / "pl", callbacks=[SweetspotCallback(tmp_path / "run", spec, module="model")], checkpoints=False)
    run = RunDir(tmp_path / "run")
    assert run.epochs == [0, 1, 2, 3, 4] and run.group_keys("head") == ["head.weight", "head.bias"]
    metrics = run.metrics()
    assert {"val_loss", "train_loss", "lr_0", "grad_norm", "update_ratio"} <= set(metrics["metric"])
    code = cli.main(["analyze", "--checkpoint-dir", str(tmp_path / "run"), "--output", str(tmp_path / "analysis"), "--no-plots"])
    assert code == 0, capsys.readouterr().err
    assert set(json.loads((tmp_path / "analysis" / "selection.json").read_text())) == {"encoder", "head"}


def test_importing_sweetspot_imports_neither_framework() -> None:
    code = (
        "import sys, sweetspot, sweetspot.integrations;"
        " bad = [m for m in ('transformers', 'lightning', 'pytorch_lightning') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
