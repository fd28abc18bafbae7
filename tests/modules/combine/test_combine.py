"""Combine: bit-exact picks, hand-checked averages, provenance, strict load, bad input."""

from __future__ import annotations

import fcntl
import hashlib
import json
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_save

import sweetspot
from modules.atomic import OutputPathError
from modules.combine.combine import write_combined, write_tensors
from modules.combine.model_fit import (
    check_file_fits,
    describe_spec_model,
    load_file_into_model,
    model_layout,
)
from modules.combine.plan import (
    plan_from_files,
    plan_from_run,
    selection_epochs,
)
from modules.combine.provenance import (
    provenance_of,
    read_provenance,
    sidecar_path,
)
from modules.combine.sources import iter_plan
from modules.errors import CheckpointImportError, CombineError, UnsafeCheckpointError
from modules.rundir.byte_ranges import FileRange
from modules.rundir.run_dir import RunDir
from modules.spec.selection import SelectionError, parse_selection
from tests.modules import _tiny


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny.record_run(tmp_path_factory.mktemp("tiny") / "run", epochs=6)


def stored(run: Path, epoch: int, group: str) -> dict[str, torch.Tensor]:
    """A group's tensors read straight from the run's file, independent of the code under test."""
    return load_file(run / "epochs" / str(epoch) / f"{group}.safetensors")


def plan_for(run_path: Path, choice: dict):
    run = RunDir(run_path)
    selection = parse_selection(choice)
    return plan_from_run(run, selection_epochs(selection, run), selection.to_json())


def test_picks_are_bit_exact_per_group(tiny_run: Path, tmp_path: Path) -> None:
    choice = {"encoder": 2, "middle": 5, "head": 6}
    out = tmp_path / "combined.safetensors"
    write_combined(plan_for(tiny_run, choice), out)
    combined = load_file(out)
    expected_keys = set()
    for group, epoch in choice.items():
        for key, tensor in stored(tiny_run, epoch, group).items():
            expected_keys.add(key)
            assert torch.equal(combined[key], tensor), key
            assert combined[key].dtype == tensor.dtype
    assert set(combined) == expected_keys
    # epochs really differ, so the test would catch a wrong pick
    assert not torch.equal(stored(tiny_run, 2, "encoder")["encoder.0.weight"], stored(tiny_run, 5, "encoder")["encoder.0.weight"])


def test_average_equals_hand_mean_and_integer_buffers_from_last_epoch(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "avg.safetensors"
    write_combined(plan_for(tiny_run, {"encoder": {"average": [2, 4]}, "middle": {"average": [1, 6]}, "head": 3}), out)
    combined = load_file(out)
    a, b, c = (stored(tiny_run, e, "encoder") for e in (2, 3, 4))
    for key in a:
        if a[key].is_floating_point():
            hand = (a[key].double() + b[key].double() + c[key].double()) / 3
            torch.testing.assert_close(combined[key].double(), hand, rtol=0, atol=1e-6)
        else:
            assert torch.equal(combined[key], c[key]), key
    # num_batches_tracked: 8 optimizer steps per epoch, so epoch 4's value is 32, not the mean 24
    assert int(combined["encoder.1.num_batches_tracked"]) == 4 * 8
    middle = [stored(tiny_run, e, "middle")["middle.0.bias"].double() for e in range(1, 7)]
    torch.testing.assert_close(combined["middle.0.bias"].double(), sum(middle) / 6, rtol=0, atol=1e-6)
    assert torch.equal(combined["head.weight"], stored(tiny_run, 3, "head")["head.weight"])


def _header_and_data(data: bytes) -> tuple[dict, bytes]:
    """A safetensors file's tensor entries (metadata left out) and its data section."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header.pop("__metadata__", None)
    return header, data[8 + length :]


def test_a_pick_only_output_holds_safetensors_own_layout_and_bytes(tiny_run: Path, tmp_path: Path) -> None:
    """The tensors copied file to file land where safetensors' own writer puts them, byte for byte."""
    choice = {"encoder": 2, "middle": 5, "head": 6}
    out = tmp_path / "combined.safetensors"
    write_combined(plan_for(tiny_run, choice), out)
    expected: dict[str, torch.Tensor] = {}
    for group, epoch in choice.items():
        expected.update(stored(tiny_run, epoch, group))
    assert _header_and_data(out.read_bytes()) == _header_and_data(safetensors_save(expected))


def test_range_copies_write_the_bytes_the_tensor_path_writes(tiny_run: Path, tmp_path: Path) -> None:
    plan = plan_for(tiny_run, {"encoder": 2, "middle": {"average": [1, 3]}, "head": 6})
    kinds = {key: type(tensor) for key, tensor in iter_plan(plan, ranges=True)}
    assert kinds["encoder.0.weight"] is FileRange and kinds["head.bias"] is FileRange
    assert kinds["middle.0.weight"] is torch.Tensor  # averaged: computed
    provenance = provenance_of(plan, "safetensors", False)
    ranged, plain = tmp_path / "ranged.safetensors", tmp_path / "plain.safetensors"
    write_tensors(ranged, "safetensors", plan.layout(), iter_plan(plan, ranges=True), provenance)
    write_tensors(plain, "safetensors", plan.layout(), iter_plan(plan), provenance)
    assert ranged.read_bytes() == plain.read_bytes()


def test_a_truncated_safetensors_source_is_named_and_nothing_is_written(tiny_run: Path, tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    for group in ("encoder", "middle", "head"):
        shutil.copy(tiny_run / "epochs" / "4" / f"{group}.safetensors", sources / f"{group}.safetensors")
    bad = sources / "middle.safetensors"
    bad.write_bytes(bad.read_bytes()[:-16])  # the header is whole; the last tensor is cut short
    plan = plan_from_files(_tiny.spec(), {g: sources / f"{g}.safetensors" for g in ("encoder", "middle", "head")})
    out = tmp_path / "out" / "combined.safetensors"
    with pytest.raises(CheckpointImportError, match=r"middle\.safetensors: tensor .* is truncated; restore the file"):
        write_combined(plan, out)
    assert not out.exists() and not list(out.parent.glob(".*.tmp"))


def test_provenance_round_trip_and_strict_load(tiny_run: Path, tmp_path: Path) -> None:
    choice = {"encoder": {"average": [3, 5]}, "middle": 4, "head": 6}
    out = tmp_path / "c.safetensors"
    write_combined(plan_for(tiny_run, choice), out)
    prov = read_provenance(out)
    assert prov["selection"] == choice
    assert prov["sweetspot_version"] == "0.1.0"
    assert [s["epoch"] for s in prov["sources"]["encoder"]] == [3, 4, 5]
    for group, sources in prov["sources"].items():
        for source in sources:
            path = tiny_run / "epochs" / str(source["epoch"]) / f"{group}.safetensors"
            assert source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    model = _tiny.build_model(seed=123)
    model.load_state_dict(load_file(out), strict=True)
    load_file_into_model(out, _tiny.build_model(seed=7))


def test_pt_output_with_sidecar(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "combined_model.pt"
    write_combined(plan_for(tiny_run, {"encoder": 1, "middle": 2, "head": 3}), out)
    state = torch.load(out, weights_only=True)
    assert torch.equal(state["middle.0.weight"], stored(tiny_run, 2, "middle")["middle.0.weight"])
    prov = json.loads(sidecar_path(out).read_text())
    assert prov["selection"] == {"encoder": 1, "middle": 2, "head": 3}
    assert prov["format"] == "pt"
    _tiny.build_model().load_state_dict(state, strict=True)
    assert not list(tmp_path.glob(".*.tmp"))


def save_seed_checkpoints(run_path: Path, folder: Path) -> dict[int, Path]:
    """Seed-style full-model checkpoints, wrapped as the seed's training script saves them."""
    run = RunDir(run_path)
    paths = {}
    for epoch in run.epochs:
        paths[epoch] = folder / f"checkpoint_epoch_{epoch}.pt"
        torch.save({"epoch": epoch, "model_state_dict": run.state_dict(epoch)}, paths[epoch])
    return paths


def test_seed_form_over_raw_checkpoints(tiny_run: Path, tmp_path: Path) -> None:
    paths = save_seed_checkpoints(tiny_run, tmp_path)
    plan = plan_from_files(_tiny.spec(), {"encoder": paths[4], "head": paths[2]}, default=paths[6])
    out = tmp_path / "out" / "combined_model.pt"
    write_combined(plan, out)
    state = torch.load(out, weights_only=True)
    for group, epoch in {"encoder": 4, "middle": 6, "head": 2}.items():
        for key, tensor in stored(tiny_run, epoch, group).items():
            assert torch.equal(state[key], tensor), key
    sources = json.loads(sidecar_path(out).read_text())["sources"]
    assert sources["encoder"][0]["sha256"] == hashlib.sha256(paths[4].read_bytes()).hexdigest()
    # the epoch comes from the checkpoint_epoch_<N> file name; other names have none
    assert {g: [s["epoch"] for s in v] for g, v in sources.items()} == {"encoder": [4], "middle": [6], "head": [2]}
    renamed = tmp_path / "final_model.pt"
    renamed.write_bytes(paths[6].read_bytes())
    plan = plan_from_files(_tiny.spec(), {"encoder": [paths[4], paths[6]]}, default=renamed)
    write_combined(plan, tmp_path / "out" / "b.pt")
    sources = json.loads(sidecar_path(tmp_path / "out" / "b.pt").read_text())["sources"]
    assert [s["epoch"] for s in sources["encoder"]] == [4, 6] and [s["epoch"] for s in sources["head"]] == [None]
    with pytest.raises(CombineError, match=r"\['middle'\]"):
        plan_from_files(_tiny.spec(), {"encoder": paths[4], "head": paths[2]})


class NotATensor:
    """An object whose unpickling calls ``open``: the loader must refuse it (plain extras are only left out)."""

    def __reduce__(self):
        return (open, ("/nonexistent/sweetspot-payload", "w"))


def test_code_pickle_source_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    evil = tmp_path / "checkpoint_epoch_9.pt"
    torch.save({"model_state_dict": RunDir(tiny_run).state_dict(6), "extra": NotATensor()}, evil, pickle_module=pickle)
    with pytest.raises(UnsafeCheckpointError, match="checkpoint_epoch_9.pt"):
        plan_from_files(_tiny.spec(), {}, default=evil)


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ({"encoder": 2, "middle": 2, "head": 2, "decoder": 3}, r"unknown group 'decoder'"),
        ({"encoder": 7, "middle": 2, "head": 2}, r"epoch 7 was not recorded; recorded epochs: \[1, 2, 3, 4, 5, 6\]"),
        ({"encoder": {"average": [7, 9]}, "middle": 2, "head": 2}, r"\[7, 9\] holds no recorded epoch"),
        ({"encoder": 2, "middle": 2}, r"no epoch for groups \['head'\]"),
    ],
)
def test_bad_selection(tiny_run: Path, choice: dict, message: str) -> None:
    with pytest.raises(SelectionError, match=message):
        plan_for(tiny_run, choice)


def test_output_inside_run_dir_is_refused(tiny_run: Path) -> None:
    target = tiny_run / "combined.safetensors"
    with pytest.raises(CombineError, match="inside the run directory"):
        write_combined(plan_for(tiny_run, {"encoder": 1, "middle": 1, "head": 1}), target)
    assert not target.exists()


def test_combined_file_not_matching_model_names_keys(tiny_run: Path, tmp_path: Path) -> None:
    state = RunDir(tiny_run).state_dict(3)
    del state["head.bias"]
    state["middle.0.weight"] = torch.zeros(3, 3)
    state["extra.weight"] = torch.zeros(2)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    desc = describe_spec_model(_tiny.spec(), "tiny.yaml")
    with pytest.raises(CombineError, match=r"do not fit the model of spec 'tiny'") as info:
        load_file_into_model(bad, _tiny.build_model(), desc)
    text = str(info.value)
    assert text.startswith(f"the weights in {bad} do not fit the model of spec 'tiny' (tiny.yaml: tests.modules._tiny:build_model")
    assert "1 key the model has but the weights lack ['head.bias']" in text
    assert "1 key the weights have but the model lacks ['extra.weight']" in text
    assert "1 shape mismatch ['middle.0.weight [3, 3] vs model [8, 16]']" in text
    # the header-only check (nothing loaded) says the same
    with pytest.raises(CombineError, match=r"do not fit the model of spec 'tiny'") as header:
        check_file_fits(bad, model_layout(_tiny.build_model()), desc)
    assert str(header.value) == text

    # only one kind of problem: the other kinds are not listed as empty lists
    del state["extra.weight"]
    state["middle.0.weight"] = RunDir(tiny_run).state_dict(3)["middle.0.weight"]
    torch.save(state, bad)
    with pytest.raises(CombineError, match=r"weights lack \['head\.bias'\]") as info:
        load_file_into_model(bad, _tiny.build_model())
    text = str(info.value)
    assert "[]" not in text and "shape mismatch" not in text and "weights lack ['head.bias']" in text
    assert "probe" not in text and "combine with" not in text


def test_update_bn_with_a_model_that_does_not_fit_names_run_and_model(tiny_run: Path, tmp_path: Path) -> None:
    plan = plan_for(tiny_run, {"encoder": 1, "middle": 2, "head": 3})
    out = tmp_path / "c.safetensors"
    with pytest.raises(CombineError, match="do not fit the model X") as info:
        write_combined(plan, out, bn_batches=_tiny_bn_batches, model_factory=lambda: torch.nn.Linear(4, 16), model_desc="the model X")
    text = str(info.value)
    assert text.startswith(f"the weights in run directory {tiny_run} do not fit the model X: 2 keys the model has")
    assert "does not fit" not in text and not out.exists()


def test_output_that_is_a_folder_is_refused_before_reading(tiny_run: Path, tmp_path: Path) -> None:
    plan = plan_for(tiny_run, {"encoder": 1, "middle": 2, "head": 3})
    for target in (tmp_path, f"{tmp_path}/"):
        with pytest.raises(OutputPathError, match="is a folder; pass a file name"):
            write_combined(plan, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_unreadable_seed_file_gives_no_skip_bad_advice(tmp_path: Path) -> None:
    broken = tmp_path / "checkpoint_epoch_3.pt"
    broken.write_bytes(b"PK\x03\x04broken")
    with pytest.raises(CheckpointImportError, match="checkpoint_epoch_3.pt is truncated or corrupt") as info:
        plan_from_files(_tiny.spec(), {}, default=broken)
    assert "checkpoint_epoch_3.pt is truncated or corrupt" in str(info.value)
    assert "--skip-bad" not in str(info.value)  # combine has no such option


def _tiny_bn_batches():
    return _tiny.batches(_tiny.load_data()["train"], size=64)


@pytest.mark.parametrize(
    ("choice", "recomputed"),
    [
        ({"encoder": 6, "middle": 2, "head": 4}, []),  # BN is in the first group, fed by the data only
        ({"encoder": {"average": [4, 6]}, "middle": 2, "head": 4}, ["encoder.1"]),
    ],
)
def test_update_bn_recomputes_only_averaged_or_crossed_groups(tiny_run: Path, tmp_path: Path, choice: dict, recomputed: list) -> None:
    plain, updated = tmp_path / "plain.safetensors", tmp_path / "bn.safetensors"
    write_combined(plan_for(tiny_run, choice), plain)
    write_combined(plan_for(tiny_run, choice), updated, bn_batches=_tiny_bn_batches, model_factory=_tiny.build_model)
    assert read_provenance(updated)["batchnorm_recomputed"] == recomputed
    a, b = load_file(plain), load_file(updated)
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed == {f"{layer}.{stat}" for layer in recomputed for stat in ("running_mean", "running_var")}
    if recomputed:  # the recomputed mean is the average of the 4 batch means of the averaged Linear's output
        x = _tiny.load_data()["train"][0]
        pre = x @ a["encoder.0.weight"].T + a["encoder.0.bias"]
        hand = sum(c.mean(0) for c in pre.split(64)) / 4
        torch.testing.assert_close(b["encoder.1.running_mean"], hand, rtol=1e-5, atol=1e-6)


def test_a_pt_replaced_after_its_sidecar_is_stale_provenance(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "combined_model.pt"
    write_combined(plan_for(tiny_run, {"encoder": 1, "middle": 1, "head": 1}), out)
    assert read_provenance(out)["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    # what a combine killed between its two renames leaves: the new .pt beside the old sidecar
    torch.save(RunDir(tiny_run).state_dict(5), out)
    with pytest.raises(CombineError, match=r"combined_model\.pt\.provenance\.json is stale provenance: it records another"):
        read_provenance(out)
    with pytest.raises(CombineError, match="stale provenance"):
        sweetspot.evaluate(tiny_run, out, spec=_tiny.spec(), resamples=10)


def test_a_second_combine_to_the_same_output_is_refused_while_the_first_writes(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "combined.safetensors"
    with open(f"{out}.lock", "a+b") as held:  # the first combine, still writing
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(CombineError, match=r"combined\.safetensors is being written by another combine"):
            sweetspot.combine(tiny_run, {"encoder": 1, "middle": 1, "head": 1}, out)
    assert not out.exists()
    sweetspot.combine(tiny_run, {"encoder": 1, "middle": 1, "head": 1}, out)
    assert out.is_file() and not Path(f"{out}.lock").exists()


def test_combine_reads_a_folder_of_checkpoint_files_as_analyze_and_evaluate_do(tiny_run: Path, tmp_path: Path) -> None:
    (tmp_path / "seed").mkdir()
    save_seed_checkpoints(tiny_run, tmp_path / "seed")
    choice = {"encoder": 2, "middle": 5, "head": {"average": [4, 6]}}
    result = sweetspot.combine(tmp_path / "seed", choice, spec=_tiny.spec())
    for group, epoch in {"encoder": 2, "middle": 5}.items():
        for key, tensor in stored(tiny_run, epoch, group).items():
            assert torch.equal(result.state_dict[key], tensor), key
    mean = sum(stored(tiny_run, e, "head")["head.weight"].double() for e in (4, 5, 6)) / 3
    assert torch.allclose(result.state_dict["head.weight"].double(), mean, atol=1e-6)
    assert result.provenance["run_dir"] == str(tmp_path / "seed")
