"""torch.distributed.checkpoint folders written by dcp.save, read in one process without running pickles."""

from __future__ import annotations

import pickle
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
import torch.distributed.checkpoint as dcp

import sweetspot
from modules.errors import CheckpointImportError, UnsafeCheckpointError
from modules.importing.dcp_read import read_dcp
from tests.modules.importing.layouts._conformance import assert_conforms
from tests.modules.importing.layouts._runs import Mlp, mlp_spec, same_bits, write_dcp_run


@pytest.fixture(scope="module")
def dcp_run(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("dcp")
    return root, write_dcp_run(root)


def test_a_dcp_run_imports_bit_exactly_and_matches_dcp_load(dcp_run, tmp_path: Path) -> None:
    root, saved = dcp_run
    report, run = assert_conforms("dcp", root, tmp_path / "run", mlp_spec(), saved, "step", strip_prefix="model.")
    assert any(key.startswith("optim.state.") for key in report.left_out_keys)
    fresh = {"model": Mlp().state_dict()}
    dcp.load(fresh, checkpoint_id=root / "step-20")  # the library's own reader agrees
    assert all(same_bits(run.state_dict(20)[k], t) for k, t in fresh["model"].items())


class _Marker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_metadata_runs_nothing(dcp_run, tmp_path: Path) -> None:
    root, _ = dcp_run
    source = Path(shutil.copytree(root, tmp_path / "src"))
    marker = tmp_path / "ran"
    (source / "step-10" / ".metadata").write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(UnsafeCheckpointError, match=r"step-10/.metadata references posix.system.*nothing in it was executed"):
        sweetspot.import_run(source, mlp_spec(), tmp_path / "run", strip_prefix="model.")
    assert not marker.exists() and not (tmp_path / "run").exists()
    (source / "step-10" / ".metadata").write_bytes(pickle.dumps(Fraction(1, 3)))  # a type DCP never stores
    with pytest.raises(CheckpointImportError, match="holds a fractions.Fraction, not DCP checkpoint metadata"):
        read_dcp(source / "step-10")


def test_a_folder_without_metadata_is_named(dcp_run, tmp_path: Path) -> None:
    root, _ = dcp_run
    source = Path(shutil.copytree(root, tmp_path / "src"))
    (source / "step-20" / ".metadata").unlink()
    with pytest.raises(CheckpointImportError, match=r"step-20 holds \['__0_0.distcp'\] but no .metadata: DCP writes it last"):
        sweetspot.import_run(source, mlp_spec(), tmp_path / "run", strip_prefix="model.")
    assert not (tmp_path / "run").exists()
    report = sweetspot.import_run(source, mlp_spec(), tmp_path / "run", strip_prefix="model.", skip_bad=True)
    assert report.epochs == [10, 30] and "step-20" in report.summary()
