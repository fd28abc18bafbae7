"""Safe checkpoint reading: plain, wrapped, legacy and safetensors files; unsafe and corrupt ones refused."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import pickle
import pickletools
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modules.errors import CheckpointImportError, UnsafeCheckpointError
from modules.importing.checkpoint_io import WRAPPER_KEYS, load_state_dict, read_checkpoint


def pickle_calls(path: Path) -> set[str]:
    """``module name`` of every global a torch.save file's pickle would call, read without unpickling."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    else:
        data = path.read_bytes()
    found, strings = set(), []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            found.add(str(arg))
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.add(f"{strings[-2]} {strings[-1]}")
        if isinstance(arg, str):
            strings.append(arg)
    return found


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {
        "layer.weight": torch.randn(4, 3),
        "layer.bias": torch.randn(4).to(torch.bfloat16),
        "bn.num_batches_tracked": torch.tensor(17, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
    }


def _assert_same(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(loaded) == list(expected)
    for key, tensor in expected.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor), key


def test_plain_state_dict(tmp_path: Path) -> None:
    torch.save(_state(), tmp_path / "a.pt")
    _assert_same(load_state_dict(tmp_path / "a.pt"), _state())


@pytest.mark.parametrize("wrapper", WRAPPER_KEYS)
def test_wrapped_state_dict_ignores_other_entries(tmp_path: Path, wrapper: str) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    torch.save({wrapper: _state(), "optimizer_state_dict": optimizer.state_dict(), "epoch": 3}, tmp_path / "a.pt")
    _assert_same(load_state_dict(tmp_path / "a.pt"), _state())


def test_legacy_non_zip_format(tmp_path: Path) -> None:
    torch.save(_state(), tmp_path / "a.pt", _use_new_zipfile_serialization=False)
    assert (tmp_path / "a.pt").read_bytes()[:4] != b"PK\x03\x04"
    _assert_same(load_state_dict(tmp_path / "a.pt"), _state())


def test_safetensors_file(tmp_path: Path) -> None:
    save_file(_state(), tmp_path / "a.safetensors")
    loaded = load_state_dict(tmp_path / "a.safetensors")
    assert sorted(loaded) == sorted(_state())
    for key, tensor in _state().items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor)


def test_reading_never_modifies_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.pt"
    torch.save({"model": _state(), "epoch": 1}, path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    state = load_state_dict(path)
    state["layer.weight"].add_(1.0)  # copy-on-write mapping: the file must stay as it was
    del state
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_code_running_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _state(), "hook": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pt needs arbitrary unpickling") as caught:
        load_state_dict(path)
    assert "GLOBAL io.open" in str(caught.value)
    assert not marker.exists()
    assert "io open" in pickle_calls(path)  # the payload is really there: an unsafe load would call open


def test_legacy_code_running_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil_legacy.pt"
    torch.save({"w": torch.ones(1), "x": Payload()}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match="evil_legacy.pt"):
        load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: data[:100],
        lambda data: b"",
        lambda data: b"\x00not a checkpoint at all" * 50,
    ],
    ids=["half", "header-only", "empty", "garbage"],
)
def test_truncated_or_corrupt_file_names_it_and_the_fix(tmp_path: Path, damage) -> None:
    good = tmp_path / "good.pt"
    torch.save(_state(), good)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(CheckpointImportError, match="bad.pt is truncated or corrupt.*--skip-bad") as caught:
        load_state_dict(bad)
    assert not isinstance(caught.value, UnsafeCheckpointError)


def test_corrupt_safetensors_file(tmp_path: Path) -> None:
    save_file(_state(), tmp_path / "a.safetensors")
    data = (tmp_path / "a.safetensors").read_bytes()
    (tmp_path / "a.safetensors").write_bytes(data[: len(data) - 5])
    with pytest.raises(CheckpointImportError, match="a.safetensors is not a readable safetensors file"):
        load_state_dict(tmp_path / "a.safetensors")


@pytest.mark.parametrize(
    "payload",
    [{"optimizer": {"lr": 0.1}}, [torch.ones(1)], {}],
    ids=["no-tensors", "list", "empty-dict"],
)
def test_file_without_a_state_dict(tmp_path: Path, payload: object) -> None:
    torch.save(payload, tmp_path / "a.pt")
    with pytest.raises(CheckpointImportError, match="a.pt holds no model state dict"):
        load_state_dict(tmp_path / "a.pt")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointImportError, match="nope.pt does not exist"):
        load_state_dict(tmp_path / "nope.pt")


@dataclasses.dataclass
class TrainConfig:
    lr: float = 0.1
    depth: int = 3


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_non_tensor_extras_are_left_out_and_named(tmp_path: Path, zip_format: bool) -> None:
    """What training scripts save beside the weights: hyper-parameters, numpy scores, a dataclass."""
    path = tmp_path / "checkpoint_epoch_3.pt"
    extras = {"args": argparse.Namespace(lr=0.1, depth=3), "best_acc": np.float64(0.93), "config": TrainConfig()}
    torch.save({"model_state_dict": _state(), **extras}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):  # what torch's own safe loader does
        torch.load(path, weights_only=True)
    loaded = read_checkpoint(path)
    _assert_same(loaded.state, _state())
    assert "argparse.Namespace" in loaded.skipped_globals
    assert f"{__name__}.TrainConfig" in loaded.skipped_globals
    assert any(name.startswith("numpy") for name in loaded.skipped_globals)


def test_an_unknown_class_in_an_extra_is_never_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A placeholder stands in for a class from a module that is not even imported (its import would run code)."""
    marker = tmp_path / "imported"
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "sidecar_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Hparams:\n    def __init__(self):\n        self.lr = 0.1\n"
    )
    monkeypatch.syspath_prepend(str(package))
    import sidecar_mod  # noqa: PLC0415

    marker.unlink()
    path = tmp_path / "a.pt"
    torch.save({"state_dict": _state(), "hparams": sidecar_mod.Hparams()}, path)
    monkeypatch.delitem(sys.modules, "sidecar_mod")
    loaded = read_checkpoint(path)
    _assert_same(loaded.state, _state())
    assert loaded.skipped_globals == ["sidecar_mod.Hparams"]
    assert not marker.exists() and "sidecar_mod" not in sys.modules


def test_allowed_global_is_loaded_for_real(tmp_path: Path) -> None:
    path = tmp_path / "a.pt"
    torch.save({"state_dict": _state(), "args": argparse.Namespace(lr=0.5)}, path)
    loaded = read_checkpoint(path, allow_globals=["argparse.Namespace"])
    assert loaded.skipped_globals == []
    _assert_same(loaded.state, _state())


@pytest.mark.parametrize("call", [os.system, eval, getattr], ids=["os.system", "eval", "getattr"])
def test_code_running_globals_in_an_extra_refuse_the_file(tmp_path: Path, call) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            if call is os.system:
                return (os.system, (f"touch {marker}",))
            if call is eval:
                return (eval, (f"open({str(marker)!r}, 'w')",))
            return (getattr, (marker, "touch"))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _state(), "x": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pt needs arbitrary unpickling"):
        load_state_dict(path)
    assert not marker.exists()


def test_a_whole_pickled_object_is_refused_not_run(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(TrainConfig(), path)
    with pytest.raises(UnsafeCheckpointError, match=r"holds a .*TrainConfig object instead of a state dict"):
        load_state_dict(path)
