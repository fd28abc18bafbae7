"""The manifest is validated once: its format version, its fields, and paths that stay inside the run."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from modules.errors import RunDirError
from modules.rundir.run_dir import MANIFEST_NAME, RunDir, RunWriter


def _run(path: Path) -> dict:
    writer = RunWriter.create(path, "unit", {"encoder": ["encoder.w"], "head": ["head.w"]}, created_by="test")
    for epoch in (1, 2):
        writer.write_epoch(epoch, {"encoder": {"encoder.w": torch.full((3,), float(epoch))}, "head": {"head.w": torch.ones(2)}})
    return json.loads((path / MANIFEST_NAME).read_text())


def _rewrite(path: Path, manifest: dict) -> None:
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_a_newer_format_is_refused_by_name(tmp_path: Path) -> None:
    manifest = _run(tmp_path / "run")
    _rewrite(tmp_path / "run", {**manifest, "format_version": 3})
    with pytest.raises(RunDirError, match=r"manifest.json has format_version 3, written by a newer sweetspot.*Upgrade"):
        RunDir(tmp_path / "run")
    with pytest.raises(RunDirError, match="newer sweetspot"):
        RunWriter(tmp_path / "run")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("groups"), r"malformed \(groups: Field required"),
        (lambda m: m["epochs"][0].pop("files"), r"epochs.0.files: Field required"),
        (lambda m: m["epochs"][0].update(epoch="1"), r"epochs.0.epoch: Input should be a valid integer"),
        (lambda m: m["epochs"][0]["files"]["head"].update(bytes=-1), r"bytes: Input should be greater than or equal to 0"),
        (lambda m: m["groups"]["head"]["keys"]["head.w"].update(dtype="float3"), r"dtype 'float3' is not one sweetspot stores"),
    ],
    ids=["no-groups", "no-files", "string-epoch", "negative-size", "unknown-dtype"],
)
def test_missing_or_bad_fields_are_a_run_dir_error_naming_the_field(tmp_path: Path, change, message: str) -> None:
    manifest = _run(tmp_path / "run")
    change(manifest)
    _rewrite(tmp_path / "run", manifest)
    with pytest.raises(RunDirError, match=message):
        RunDir(tmp_path / "run")


@pytest.mark.parametrize("bad_path", ["../outside/encoder.safetensors", "/etc/passwd", "epochs/1/../../../x.safetensors"])
def test_paths_leaving_the_run_are_refused_by_name(tmp_path: Path, bad_path: str) -> None:
    manifest = _run(tmp_path / "run")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "encoder.safetensors").write_bytes((tmp_path / "run/epochs/1/encoder.safetensors").read_bytes())
    manifest["epochs"][0]["files"]["encoder"]["path"] = bad_path
    _rewrite(tmp_path / "run", manifest)
    with pytest.raises(RunDirError, match=rf"file path '{bad_path}' leaves the run directory"):
        RunDir(tmp_path / "run")


def test_a_symlink_leaving_the_run_is_refused(tmp_path: Path) -> None:
    _run(tmp_path / "run")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "run/epochs/1/encoder.safetensors"
    (outside / "encoder.safetensors").write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(outside / "encoder.safetensors")
    run = RunDir(tmp_path / "run")
    with pytest.raises(RunDirError, match=r"resolves to .*outside/encoder.safetensors, outside the run directory"):
        run.read_group(1, "encoder")
    assert any("outside the run directory" in p for p in run.verify())
    assert torch.equal(run.read_group(2, "encoder")["encoder.w"], torch.full((3,), 2.0))  # the rest still reads


def test_manifest_written_by_the_writer_round_trips(tmp_path: Path) -> None:
    manifest = _run(tmp_path / "run")
    assert manifest["format_version"] == 2 and manifest["index"] == "epoch"
    assert manifest["epochs"][1]["files"]["head"]["path"] == "epochs/2/head.safetensors"
    assert set(manifest["epochs"][1]["files"]["head"]) == {"path", "sha256", "bytes"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert RunDir(tmp_path / "run").epochs == [1, 2]


def test_a_version_1_manifest_still_reads_and_counts_epochs(tmp_path: Path) -> None:
    manifest = _run(tmp_path / "run")
    old = {key: value for key, value in manifest.items() if key != "index"}
    _rewrite(tmp_path / "run", {**old, "format_version": 1})
    run = RunDir(tmp_path / "run")
    assert run.epochs == [1, 2] and run.index == "epoch"
    writer = RunWriter(tmp_path / "run")
    assert writer.index == "epoch"


def test_a_run_indexed_by_step_says_so(tmp_path: Path) -> None:
    writer = RunWriter.create(tmp_path / "run", "unit", {"head": ["head.w"]}, index="step")
    writer.write_epoch(500, {"head": {"head.w": torch.zeros(2)}})
    assert json.loads((tmp_path / "run" / MANIFEST_NAME).read_text())["index"] == "step"
    assert RunDir(tmp_path / "run").index == "step"
    with pytest.raises(RunDirError, match="index 'batch' is not one a run counts by"):
        RunWriter.create(tmp_path / "other", "unit", {"head": ["head.w"]}, index="batch")
