"""The run directory: round trip, one-group reads, atomic epochs, and damage that is named, not used."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from modules.errors import RunDirError
from modules.rundir.run_dir import MANIFEST_NAME, RunDir, RunWriter, sha256_file

REPO = Path(__file__).resolve().parents[3]
GROUPS = {"backbone": ["backbone.w", "backbone.bn.num_batches_tracked"], "head": ["head.w", "head.mask"]}


def _epoch_states(epoch: int) -> dict[str, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(epoch)
    return {
        "backbone": {
            "backbone.w": torch.randn(5, 4, generator=generator),
            "backbone.bn.num_batches_tracked": torch.tensor(epoch * 10, dtype=torch.int64),
        },
        "head": {
            "head.w": torch.randn(3, 5, generator=generator).to(torch.bfloat16),
            "head.mask": torch.tensor([True, epoch % 2 == 0, False]),
        },
    }


def _make_run(path: Path, epochs: list[int]) -> RunWriter:
    writer = RunWriter.create(path, "unit", GROUPS, created_by="test")
    for epoch in epochs:
        writer.write_epoch(epoch, _epoch_states(epoch), source=f"epoch {epoch}")
    return writer


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def test_group_arrays_without_torch_hold_the_same_values_and_a_changed_file_is_refused(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(3)
    tensors = {
        "f16": torch.randn(2, 3, generator=generator).half(), "f64": torch.randn(4, generator=generator).double(),
        "i8": torch.tensor([-3, 0, 7], dtype=torch.int8), "u8": torch.tensor([[1, 2], [3, 250]], dtype=torch.uint8),
        "empty": torch.zeros(0, 5), "scalar": torch.tensor(2.5), "bf16": torch.randn(3, 2, generator=generator).bfloat16(),
        "f8": torch.tensor([0.5, -2.0, 3.0]).to(torch.float8_e4m3fn), "flag": torch.tensor([True, False]),
    }
    writer = RunWriter.create(tmp_path / "run", "unit", {"g": list(tensors)})
    for epoch in (1, 2):
        writer.write_epoch(epoch, {"g": tensors})
    run = RunDir(tmp_path / "run")
    arrays = run.read_group_arrays(1, "g")
    assert sorted(arrays) == sorted(tensors)
    for key, tensor in tensors.items():
        if tensor.dtype in (torch.bfloat16, torch.float8_e4m3fn):  # numpy lacks them: their bits, tagged
            bits, tag = arrays[key]
            assert tag == str(tensor.dtype).removeprefix("torch.") and bits.itemsize == tensor.element_size()
            assert bits.tobytes() == tensor.view(torch.uint8).numpy().tobytes(), key
        else:
            assert arrays[key].dtype == tensor.numpy().dtype and arrays[key].shape == tuple(tensor.shape)
            assert (arrays[key] == tensor.numpy()).all(), key
    path = run.group_path(2, "g")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match="sha256 differs from the manifest"):
        RunDir(tmp_path / "run").read_group_arrays(2, "g")


@pytest.mark.parametrize(
    "entry", [{"dtype": "F32", "shape": [-1], "data_offsets": [4, 0]}, {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]},
              {"shape": [1], "data_offsets": [0, 4]}, {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, "w"],
)
def test_arrays_from_a_malformed_header_are_refused_naming_the_file(entry: object) -> None:
    import struct

    from modules.errors import CheckpointImportError
    from modules.rundir.safetensors_stream import arrays_from_bytes

    header = json.dumps({"w": entry}).encode()
    data = struct.pack("<Q", len(header)) + header + bytes(8)
    with pytest.raises(CheckpointImportError, match="group.safetensors: .*the file is corrupt"):
        arrays_from_bytes(data, "group.safetensors")


def test_reading_a_run_imports_neither_torch_nor_pandas() -> None:
    """The search's checkpoint pool (one process per node and search) reads runs: without torch
    its process starts in a fraction of a second instead of seconds."""
    code = "import sys, search.execution.pool; print(sorted({'torch', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_round_trip_of_tensors_manifest_and_metrics(tmp_path: Path) -> None:
    writer = _make_run(tmp_path / "run", [4, 0, 2])
    writer.add_metrics([(0, "model", "val_loss", 1.0), (2, "model", "val_loss", 0.5), (2, "head", "f1", 0.25)])
    writer.add_metrics([(2, "model", "val_loss", 0.75), (4, "model", "val_loss", math.nan)])
    writer.write_spec_text("name: unit\n")

    run = RunDir(tmp_path / "run")
    assert run.epochs == [0, 2, 4]
    assert run.groups == ["backbone", "head"]
    assert run.group_keys("head") == ["head.w", "head.mask"]
    assert run.tensor_infos("head")["head.w"].dtype == "bfloat16"
    assert run.tensor_infos("head")["head.w"].shape == (3, 5)
    assert run.group_nbytes("backbone") == 5 * 4 * 4 + 8
    assert run.spec_name == "unit" and run.created_by == "test"
    assert run.epoch_entry(2).source == "epoch 2"
    assert run.spec_path().read_text() == "name: unit\n"
    for epoch in (0, 2, 4):
        expected = _epoch_states(epoch)
        for group, tensors in expected.items():
            got = run.read_group(epoch, group)
            assert sorted(got) == sorted(tensors)
            assert all(_same(got[k], t) for k, t in tensors.items()), (epoch, group)
        assert _same(run.read_tensor(epoch, "head", "head.w"), expected["head"]["head.w"])
    assert run.verify() == []
    manifest = json.loads((tmp_path / "run" / MANIFEST_NAME).read_text())
    assert manifest["format_version"] == 2
    record = manifest["epochs"][1]["files"]["head"]
    assert record["sha256"] == sha256_file(tmp_path / "run" / record["path"])
    assert record["bytes"] == (tmp_path / "run" / record["path"]).stat().st_size

    metrics = run.metrics()
    assert list(metrics.columns) == ["epoch", "group", "metric", "value"]
    values = {(int(r.epoch), r.group, r.metric): r.value for r in metrics.itertuples()}
    assert values[(0, "model", "val_loss")] == 1.0
    assert values[(2, "model", "val_loss")] == 0.75  # the later value replaced the earlier
    assert values[(2, "head", "f1")] == 0.25
    assert math.isnan(values[(4, "model", "val_loss")])
    assert len(values) == 4


def test_reopened_writer_appends_and_tied_tensors_are_stored(tmp_path: Path) -> None:
    _make_run(tmp_path / "run", [0])
    writer = RunWriter(tmp_path / "run")
    states = _epoch_states(2)
    shared = torch.arange(8, dtype=torch.float32)
    states["head"]["head.w"] = shared[:6].reshape(2, 3).to(torch.bfloat16)
    with pytest.raises(RunDirError, match=r"key 'head.w': shape \[2, 3\] dtype bfloat16 differs from the run's \[3, 5\]"):
        writer.write_epoch(2, states)
    states = _epoch_states(2)
    view = states["backbone"]["backbone.w"]
    states["backbone"]["backbone.w"] = torch.cat([view, view]).view(10, 4)[:5]  # a view into a larger storage
    writer.write_epoch(2, states)
    assert _same(RunDir(tmp_path / "run").read_group(2, "backbone")["backbone.w"], view)


def test_reading_one_group_touches_no_other_file(tmp_path: Path) -> None:
    _make_run(tmp_path / "run", [0, 2])
    head_file = tmp_path / "run" / "epochs" / "2" / "head.safetensors"
    head_file.unlink()
    run = RunDir(tmp_path / "run")
    assert _same(run.read_group(2, "backbone")["backbone.w"], _epoch_states(2)["backbone"]["backbone.w"])
    with pytest.raises(RunDirError, match=r"epochs/2/head.safetensors is listed in .*manifest.json but missing"):
        run.state_dict(2)


def test_write_errors_name_the_problem(tmp_path: Path) -> None:
    writer = _make_run(tmp_path / "run", [0])
    with pytest.raises(RunDirError, match="epoch 0 is already recorded"):
        writer.write_epoch(0, _epoch_states(0))
    with pytest.raises(RunDirError, match="non-negative integer"):
        writer.write_epoch(-2, _epoch_states(0))
    with pytest.raises(RunDirError, match=r"groups missing \['head'\], unknown \['neck'\]"):
        writer.write_epoch(2, {"backbone": _epoch_states(2)["backbone"], "neck": {}})
    states = _epoch_states(2)
    del states["head"]["head.mask"]
    with pytest.raises(RunDirError, match=r"group 'head': keys missing \['head.mask'\]"):
        writer.write_epoch(2, states)
    states = _epoch_states(2)
    states["backbone"]["backbone.w"] = states["backbone"]["backbone.w"].double()
    with pytest.raises(RunDirError, match="dtype float64 differs"):
        writer.write_epoch(2, states)
    assert RunDir(tmp_path / "run").epochs == [0]
    with pytest.raises(RunDirError, match="already holds a run"):
        RunWriter.create(tmp_path / "run", "unit", GROUPS)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(RunDirError, match="exists and is not empty"):
        RunWriter.create(tmp_path / "other", "unit", GROUPS)


def test_read_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        RunDir(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RunDirError, match="has no manifest.json"):
        RunDir(tmp_path / "plain")
    _make_run(tmp_path / "run", [0])
    run = RunDir(tmp_path / "run")
    with pytest.raises(RunDirError, match=r"epoch 3 is not recorded .*recorded epochs: \[0\]"):
        run.read_group(3, "head")
    with pytest.raises(RunDirError, match=r"has no group 'neck'; its groups are \['backbone', 'head'\]"):
        run.read_group(0, "neck")
    manifest_path = tmp_path / "run" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "format_version": 3}))
    with pytest.raises(RunDirError, match="format_version 3"):
        RunDir(tmp_path / "run")
    manifest_path.write_text(json.dumps(manifest)[:-40])
    with pytest.raises(RunDirError, match="manifest.json is unreadable"):
        RunDir(tmp_path / "run")


def test_truncated_group_file_is_named(tmp_path: Path) -> None:
    _make_run(tmp_path / "run", [0])
    path = tmp_path / "run" / "epochs" / "0" / "backbone.safetensors"
    path.write_bytes(path.read_bytes()[:-7])
    run = RunDir(tmp_path / "run")
    with pytest.raises(RunDirError, match=r"epochs/0/backbone.safetensors has \d+ bytes but the manifest records \d+"):
        run.read_group(0, "backbone")
    problems = run.verify()
    assert len(problems) == 1 and "backbone.safetensors" in problems[0]
    assert _same(run.read_group(0, "head")["head.w"], _epoch_states(0)["head"]["head.w"])


def test_same_size_corruption_is_found(tmp_path: Path) -> None:
    _make_run(tmp_path / "run", [0])
    path = tmp_path / "run" / "epochs" / "0" / "head.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    problems = RunDir(tmp_path / "run").verify()
    assert len(problems) == 1 and "head.safetensors: sha256 differs" in problems[0]
    # the first read in a process checks the file against the manifest: the flipped byte is refused
    run = RunDir(tmp_path / "run")
    with pytest.raises(RunDirError, match=r"head.safetensors: sha256 differs from the manifest.*sweetspot verify"):
        run.read_group(0, "head")
    with pytest.raises(RunDirError, match="head.safetensors: sha256 differs"):
        run.open_group(0, "head")
    assert set(run.read_group(0, "backbone")) == set(GROUPS["backbone"])  # an intact file reads as before


def test_leftover_partial_epoch_folder_is_named_not_used(tmp_path: Path) -> None:
    _make_run(tmp_path / "run", [0])
    partial = tmp_path / "run" / "epochs" / ".partial-2-12345"
    partial.mkdir()
    (partial / "backbone.safetensors").write_bytes(b"half")
    stray = tmp_path / "run" / "epochs" / "6"
    stray.mkdir()
    with pytest.warns(UserWarning, match=r"incomplete epoch folders .*\.partial-2-12345"):
        run = RunDir(tmp_path / "run")
    assert run.epochs == [0]
    assert run.incomplete == [str(partial), str(stray)]


_KILLED_WRITER = """
import sys, torch
from modules.rundir.run_dir import RunWriter
big = {"a": ["a.w"], "b": ["b.w"]}
writer = RunWriter.create(sys.argv[1], "killed", big)
def states(value):
    return {g: {f"{g}.w": torch.full((4_000_000,), float(value))} for g in big}
writer.write_epoch(0, states(0))
print("ready", flush=True)
writer.write_epoch(2, states(2))
print("finished", flush=True)
"""


def test_write_killed_midway_leaves_the_last_complete_epoch(tmp_path: Path) -> None:
    run_path = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(run_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        partial_file = None
        while partial_file is None and time.monotonic() < deadline:
            found = [p for p in (run_path / "epochs").glob(".partial-2-*/*") if p.stat().st_size > 0]
            partial_file = found[0] if found else None
            if partial_file is None:
                time.sleep(0.0005)
        assert partial_file is not None, "the child never started writing epoch 2"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert child.stdout.read() == ""  # it never finished epoch 2

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = RunDir(run_path)
    assert run.epochs == [0]
    assert len(run.incomplete) == 1 and ".partial-2-" in run.incomplete[0]
    assert any(".partial-2-" in str(w.message) for w in caught)
    assert not (run_path / "epochs" / "2").exists()
    assert torch.equal(run.read_group(0, "a")["a.w"], torch.zeros(4_000_000))
    assert run.verify() == []
    check = run.check()
    assert check.ok and check.leftovers == run.incomplete and "remove with clean" in check.summary()
    # The run can carry on: a new writer records epoch 2 whole, removing the killed writer's folder.
    RunWriter(run_path).write_epoch(2, {g: {f"{g}.w": torch.full((4_000_000,), 2.0)} for g in ("a", "b")})
    assert not list((run_path / "epochs").glob(".partial-*"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert RunDir(run_path).epochs == [0, 2]


def test_group_files_are_byte_identical_to_safetensors_own_writer(tmp_path):
    """The run directory's fast writer (hash while writing, O_DIRECT where allowed) must produce
    exactly the bytes safetensors itself writes, for every dtype and shape a model holds."""
    import hashlib

    from safetensors.torch import save as safetensors_save

    from modules.rundir.safetensors_stream import save_tensors

    gen = torch.Generator().manual_seed(0)
    tensors = {
        "b.weight": torch.randn(33, 17, generator=gen),
        "a.bias": torch.randn(5, generator=gen).to(torch.float64),
        "half": torch.randn(3, 7, generator=gen).half(),
        "brain": torch.randn(9, generator=gen).to(torch.bfloat16),
        "bn.num_batches_tracked": torch.tensor(12, dtype=torch.int64),
        "mask": torch.rand(6, generator=gen) > 0.5,
        "small_int": torch.arange(10, dtype=torch.int16),
        "bytes": torch.arange(11, dtype=torch.uint8),
        "u16": torch.arange(7).to(torch.uint16),
        "u32": torch.arange(5).to(torch.uint32),
        "u64": torch.arange(3).to(torch.uint64),
        "f8": torch.linspace(-2, 2, 6).to(torch.float8_e4m3fn),
        "f8b": torch.linspace(-2, 2, 6).to(torch.float8_e5m2),
        "empty": torch.zeros(0, 4),
        "sliced": torch.randn(8, 8, generator=gen)[::2, 1:5],  # non-contiguous view
        "big": torch.randn(1 << 20, generator=gen),
        "bigger": torch.randn(3 << 20, generator=gen),  # with "big", 16 MB: spans several 8 MB write chunks
    }
    metadata = {"group": "g"}  # one key: safetensors orders several by a randomised hash map
    expected = safetensors_save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    for name, durable in (("durable.safetensors", True), ("fast.safetensors", False)):
        path = tmp_path / name
        sha, size = save_tensors(path, tensors, metadata, durable)
        written = path.read_bytes()
        assert written == expected
        assert size == len(expected) and sha == hashlib.sha256(expected).hexdigest()


def test_a_writer_on_a_corrupt_manifest_names_the_file(tmp_path):
    from modules.errors import RunDirError
    from modules.rundir.run_dir import RunWriter

    RunWriter.create(tmp_path / "run", "spec", {"g": ["g.w"]})
    (tmp_path / "run" / "manifest.json").write_text("{ not json")
    with pytest.raises(RunDirError, match=r"manifest.json is unreadable"):
        RunWriter.create(tmp_path / "run", "spec", {"g": ["g.w"]}, exist_ok=True)


def test_an_error_inside_write_epoch_removes_its_temporary_folder(tmp_path: Path, monkeypatch) -> None:
    import modules.rundir.writer as run_writer

    writer = _make_run(tmp_path / "run", [0])
    real = run_writer.save_tensors

    def failing(path, tensors, metadata, durable=True):
        if metadata["group"] == "head":
            raise OSError(28, "No space left on device")
        return real(path, tensors, metadata, durable)

    monkeypatch.setattr(run_writer, "save_tensors", failing)
    with pytest.raises(OSError, match="No space left"):
        writer.write_epoch(1, _epoch_states(1))
    assert sorted(p.name for p in (tmp_path / "run" / "epochs").iterdir()) == ["0"]
    monkeypatch.undo()
    writer.write_epoch(1, _epoch_states(1))  # the writer is still usable
    assert RunDir(tmp_path / "run").epochs == [0, 1]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_check_and_clean_remove_only_leftovers_of_gone_writers(tmp_path: Path) -> None:
    run_path = tmp_path / "run"
    _make_run(run_path, [0, 1])
    epochs = run_path / "epochs"
    dead = _dead_pid()
    stale_partial = epochs / f".partial-3-{dead}"
    stale_partial.mkdir()
    (stale_partial / "head.safetensors").write_bytes(b"half")
    live_partial = epochs / f".partial-4-{os.getppid()}"
    live_partial.mkdir()
    unlisted = epochs / "5"  # renamed into place, killed before the manifest was written
    unlisted.mkdir()
    stale_tmp = run_path / f".metrics.parquet.{dead}-0badc0de.tmp"
    stale_tmp.write_bytes(b"x")
    foreign = run_path / "notes.txt"
    foreign.write_text("mine")
    (epochs / "0" / "head.safetensors").write_bytes(b"changed")

    with pytest.warns(UserWarning, match="incomplete epoch folders"):
        run = RunDir(run_path)
    result = run.check(clean=True)
    assert not result.ok and any("head.safetensors has 7 bytes" in p for p in result.problems)
    assert sorted(result.removed) == sorted(map(str, [stale_partial, unlisted, stale_tmp]))
    assert not stale_partial.exists() and not unlisted.exists() and not stale_tmp.exists()
    assert live_partial.exists() and foreign.exists() and (epochs / "1").is_dir()
    assert f"removed leftover {unlisted}" in result.summary()
    assert run.check().leftovers == []  # the live writer's folder is not a leftover


def test_an_epoch_folder_without_its_manifest_entry_is_replaced_by_the_next_write(tmp_path: Path) -> None:
    writer = _make_run(tmp_path / "run", [0])
    (tmp_path / "run" / "epochs" / "1").mkdir()
    (tmp_path / "run" / "epochs" / "1" / "head.safetensors").write_bytes(b"old")
    writer.write_epoch(1, _epoch_states(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = RunDir(tmp_path / "run")
    assert run.epochs == [0, 1] and run.verify() == []


def test_streaming_writer_output_is_byte_identical_to_safetensors_own(tmp_path) -> None:
    """combine's writer takes one tensor at a time, in any order, and still writes safetensors' bytes."""
    import random

    from safetensors.torch import save as safetensors_save

    from modules.rundir.safetensors_stream import dtype_name, write_streaming

    gen = torch.Generator().manual_seed(1)
    tensors = {
        "z.weight": torch.randn(7, 3, generator=gen),
        "a.bias": torch.randn(5, generator=gen).half(),
        "m.bf": torch.randn(4, generator=gen).to(torch.bfloat16),
        "bn.num_batches_tracked": torch.tensor(3),
        "flag": torch.tensor([True, False]),
        "empty": torch.zeros(0, 2),
        "d": torch.randn(2, generator=gen).double(),
    }
    layout = {k: (tuple(t.shape), dtype_name(t.dtype)) for k, t in tensors.items()}
    order = list(tensors)
    random.Random(0).shuffle(order)
    write_streaming(tmp_path / "s.safetensors", layout, ((k, tensors[k]) for k in order), {"format": "pt"})
    assert (tmp_path / "s.safetensors").read_bytes() == safetensors_save(tensors, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"\['d'\] were laid out but not written"):
        write_streaming(tmp_path / "t.safetensors", layout, ((k, tensors[k]) for k in tensors if k != "d"), {})
