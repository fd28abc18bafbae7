"""Lightning's layout on a real run of Lightning's Trainer with ModelCheckpoint and CSVLogger."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

import sweetspot
from modules.errors import CheckpointImportError, SpecError
from tests.modules.importing.layouts._conformance import assert_conforms
from tests.modules.importing.layouts._runs import mlp_spec, train_lightning


@pytest.fixture(scope="module")
def lightning_run(tmp_path_factory) -> Path:
    return train_lightning(tmp_path_factory.mktemp("lightning"))


def _expected(checkpoints: Path) -> dict[int, dict[str, torch.Tensor]]:
    expected = {}
    for path in checkpoints.glob("epoch=*.ckpt"):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        expected[saved["epoch"]] = {k.removeprefix("model."): v for k, v in saved["state_dict"].items()}
    return expected


def _logged(metrics_csv: Path) -> dict[tuple[int, str], float]:
    logged = {}
    with open(metrics_csv) as handle:
        for row in csv.DictReader(handle):
            for name in ("train_loss", "val_loss"):
                if row[name]:
                    logged[int(row["epoch"]), name] = float(row[name])
    return logged


@pytest.mark.parametrize("below", ["", "lightning_logs", "lightning_logs/version_0", "lightning_logs/version_0/checkpoints"])
def test_a_lightning_run_imports_bit_exactly_from_any_folder_above(lightning_run: Path, tmp_path: Path, below: str) -> None:
    version = lightning_run / "lightning_logs" / "version_0"
    assert (version / "checkpoints" / "last.ckpt").is_file()
    expected = _expected(version / "checkpoints")
    assert sorted(expected) == [0, 1, 2, 3, 4]
    report, _ = assert_conforms(
        "lightning", lightning_run / below, tmp_path / "run", mlp_spec(), expected, "epoch",
        _logged(version / "metrics.csv"), strip_prefix="model.",
    )
    assert "hyper" not in " ".join(report.left_out_keys)


def test_the_module_prefix_is_named_in_the_error_and_two_versions_are_refused(lightning_run: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"All keys start with 'model.': pass --strip-prefix model. to drop it"):
        sweetspot.import_run(lightning_run, mlp_spec(), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    source = Path(shutil.copytree(lightning_run, tmp_path / "two"))
    shutil.copytree(source / "lightning_logs" / "version_0", source / "lightning_logs" / "version_1")
    with pytest.raises(CheckpointImportError, match="holds 2 Lightning checkpoint folders .*pass one of them"):
        sweetspot.import_run(source, mlp_spec(), tmp_path / "run", strip_prefix="model.")
    report = sweetspot.import_run(source / "lightning_logs" / "version_1", mlp_spec(), tmp_path / "run", strip_prefix="model.")
    assert report.epochs == [0, 1, 2, 3, 4]


def test_mixed_layouts_in_one_folder_are_refused_until_one_is_named(lightning_run: Path, tmp_path: Path) -> None:
    source = Path(shutil.copytree(lightning_run / "lightning_logs" / "version_0" / "checkpoints", tmp_path / "mixed"))
    state = torch.load(source / "epoch=0-step=4.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    torch.save(state, source / "checkpoint_epoch_7.pt")
    with pytest.raises(CheckpointImportError, match=r"mixes checkpoint layouts \(seed: 1 checkpoint_epoch_<N> files;"
                       r" lightning: .*--layout \(seed or lightning"):
        sweetspot.import_run(source, mlp_spec(), tmp_path / "run", strip_prefix="model.")
    assert not (tmp_path / "run").exists()
    report = sweetspot.import_run(source, mlp_spec(), tmp_path / "run", strip_prefix="model.", layout="lightning")
    assert report.epochs == [0, 1, 2, 3, 4]
