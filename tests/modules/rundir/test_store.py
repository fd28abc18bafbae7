"""Runs on object storage: a tiny run recorded into pyarrow file systems (``file://``, in-memory,
and a local S3 server when moto is installed) reads back bit-exactly, one object per group read,
an epoch without its manifest entry is invisible and cleaned, and the steps run on it."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch
from fsspec.implementations.memory import MemoryFileSystem
from safetensors.torch import load_file

import sweetspot
from modules.combine.provenance import read_provenance
from modules.errors import CheckpointImportError, RunDirError
from modules.importing.importer import import_checkpoints
from modules.rundir.run_dir import MANIFEST_NAME, RunDir, RunWriter
from modules.rundir.store import RunStore, run_store
from modules.spec.schema import parse_spec
from tests.modules import _tiny
from tests.modules.importing.test_importer import SPEC_DATA, write_seed_run

EPOCHS = 6


class CountingHandler(pafs.FSSpecHandler):
    """An in-memory file system that records every file opened for reading."""

    def __init__(self) -> None:
        super().__init__(MemoryFileSystem())
        self.opened: list[str] = []

    def open_input_stream(self, path: str):  # noqa: ANN201 - pyarrow's handler interface
        self.opened.append(path)
        return super().open_input_stream(path)

    def open_input_file(self, path: str):  # noqa: ANN201
        self.opened.append(path)
        return super().open_input_file(path)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """A local S3-compatible server (moto); the URI prefix of a fresh bucket on it."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[dev]')")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            patch.setenv(name, value)
        server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            fs, _ = pafs.FileSystem.from_uri(f"s3://runs?endpoint_override={host}:{port}&scheme=http&allow_bucket_creation=true")
            fs.create_dir("runs")
            yield f"?endpoint_override={host}:{port}&scheme=http"
        finally:
            server.stop()


def _where(kind: str, tmp: Path, name: str, s3: str | None = None) -> str | tuple:
    if kind == "file":
        return (tmp / name).as_uri()
    if kind == "memory":
        return (pafs.PyFileSystem(pafs.FSSpecHandler(MemoryFileSystem())), f"/{tmp.name}/{name}")
    return f"s3://runs/{tmp.name}/{name}{s3}"


STORES = ["file", "memory", "s3"]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny.record_run(tmp_path_factory.mktemp("local") / "run", epochs=EPOCHS)


@pytest.fixture(scope="module", params=STORES)
def remote_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str | tuple:
    """The same training recorded straight into a store (training on CPU is deterministic)."""
    s3 = request.getfixturevalue("s3_server") if request.param == "s3" else None
    where = _where(request.param, tmp_path_factory.mktemp(request.param), "run", s3)
    _tiny.record_run(where, epochs=EPOCHS)
    return where


def test_a_run_recorded_into_a_store_reads_back_bit_exactly(remote_run, local_run: Path) -> None:
    run, local = RunDir(remote_run), RunDir(local_run)
    assert not run.is_local and run.epochs == local.epochs == list(range(1, EPOCHS + 1))
    assert run.groups == local.groups
    for epoch in run.epochs:
        # the same bytes as a local run's files: the manifests' sha256 agree
        assert {g: f.sha256 for g, f in run.epoch_entry(epoch).files.items()} == {
            g: f.sha256 for g, f in local.epoch_entry(epoch).files.items()
        }
        for group in run.groups:
            expected = load_file(local_run / "epochs" / str(epoch) / f"{group}.safetensors")
            got = run.read_group(epoch, group)
            assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
            with run.open_group(epoch, group) as reader:
                assert all(torch.equal(reader.get(k), expected[k]) for k in expected)
    assert run.metrics().equals(local.metrics())
    assert run.verify() == [] and run.check().ok and run.check().leftovers == []
    assert run.spec_path().read_text() == (local_run / "sweetspot.yaml").read_text()
    with pytest.raises(RunDirError, match="no local path; read it through RunDir"):
        run.group_path(2, "head")


def test_reading_one_group_opens_only_that_object(tmp_path: Path) -> None:
    handler = CountingHandler()
    where = (pafs.PyFileSystem(handler), f"/{tmp_path.name}/run")
    _tiny.record_run(where, epochs=2)
    run = RunDir(where)
    handler.opened.clear()
    run.read_group(2, "middle")
    with run.open_group(1, "head") as reader:
        reader.get("head.weight")
    # only those two objects (the random-access one is also hashed once against the manifest)
    opened = {tuple(p.rsplit("/", 3)[-3:]) for p in handler.opened}
    assert opened == {("epochs", "2", "middle.safetensors"), ("epochs", "1", "head.safetensors")}


def _states(value: float) -> dict[str, dict[str, torch.Tensor]]:
    return {"a": {"a.w": torch.full((4, 3), value)}, "b": {"b.w": torch.arange(6) + int(value)}}


@pytest.mark.parametrize("kind", STORES)
def test_an_epoch_whose_manifest_write_never_happened_is_invisible_and_cleaned(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = request.getfixturevalue("s3_server") if kind == "s3" else None
    where = _where(kind, tmp_path, "run", s3)
    writer = RunWriter.create(where, "spec", {"a": ["a.w"], "b": ["b.w"]})
    writer.write_epoch(0, _states(0))
    real = RunStore.write_atomic

    def killed_before_the_manifest(store: RunStore, rel: str, data: bytes) -> None:
        if rel == MANIFEST_NAME:
            raise KeyboardInterrupt("killed before the manifest")  # the writer dies after its group objects are written
        real(store, rel, data)

    monkeypatch.setattr(RunStore, "write_atomic", killed_before_the_manifest)
    with pytest.raises(KeyboardInterrupt, match="killed before the manifest"):
        RunWriter(where).write_epoch(1, _states(1))
    monkeypatch.undo()

    with pytest.warns(UserWarning, match=r"ignoring incomplete epoch folders \[.*epochs/1'\]"):
        run = RunDir(where)
    assert run.epochs == [0]
    check = run.check()
    assert check.ok and [p.rsplit("/", 2)[-2:] for p in check.leftovers] == [["epochs", "1"]]
    assert [str(p).rsplit("/", 2)[-2:] for p in run.check(clean=True).removed] == [["epochs", "1"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert RunDir(where).check().leftovers == []
    RunWriter(where).write_epoch(1, _states(1))  # the epoch is written again from scratch
    assert torch.equal(RunDir(where).read_group(1, "b")["b.w"], _states(1)["b"]["b.w"])


def test_analyze_and_combine_on_a_remote_run_match_the_local_copy(remote_run, local_run: Path, tmp_path: Path) -> None:
    remote = sweetspot.analyze(remote_run, plots=False)
    local = sweetspot.analyze(local_run, plots=False)
    assert remote.selection.to_json() == local.selection.to_json()
    selection = {"encoder": 2, "middle": {"average": [3, 5]}, "head": EPOCHS}
    sweetspot.combine(remote_run, selection, tmp_path / "remote.safetensors")
    sweetspot.combine(local_run, selection, tmp_path / "local.safetensors")
    got, expected = load_file(tmp_path / "remote.safetensors"), load_file(tmp_path / "local.safetensors")
    assert got.keys() == expected.keys()
    assert all(got[k].dtype == expected[k].dtype and torch.equal(got[k], expected[k]) for k in expected)
    provenance = read_provenance(tmp_path / "remote.safetensors")
    location = RunDir(remote_run).location
    assert provenance["run_dir"] == location and "?" not in location
    assert provenance["sources"]["head"][0]["path"] == f"{location}/epochs/{EPOCHS}/head.safetensors"


def test_errors_name_the_uri_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=r"cannot open foo://bucket/run: .*s3://, gs://, hdfs://"):
        RunDir("foo://bucket/run")
    with pytest.raises(RunDirError, match=r"run directory file://.*/nothing does not exist"):
        RunDir((tmp_path / "nothing").as_uri())
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(RunDirError, match=r"file://.*/empty has no manifest.json"):
        RunDir((tmp_path / "empty").as_uri())
    with pytest.raises(TypeError, match=r"a run is a path, a URI"):
        run_store(42)  # type: ignore[arg-type]


def test_missing_bucket_is_named(s3_server: str) -> None:
    with pytest.raises(RunDirError, match=r"run directory s3://no-such-bucket/run does not exist"):
        RunDir(f"s3://no-such-bucket/run{s3_server}")


def test_import_writes_a_run_into_a_store_equal_to_a_local_import(tmp_path: Path) -> None:
    write_seed_run(tmp_path / "seed", metrics="epoch,val_loss\n2,1.5\n4,1.0\n6,0.75\n8,0.5\n")
    spec = parse_spec(SPEC_DATA, "test spec")
    where = (pafs.PyFileSystem(pafs.FSSpecHandler(MemoryFileSystem())), f"/{tmp_path.name}/imported")
    report = import_checkpoints(tmp_path / "seed", spec, where, progress=False)
    import_checkpoints(tmp_path / "seed", spec, tmp_path / "local", progress=False)
    run, local = RunDir(where), RunDir(tmp_path / "local")
    assert report.epochs == run.epochs == local.epochs == [2, 4, 6, 8]
    assert all(run.epoch_entry(e).files == local.epoch_entry(e).files for e in run.epochs)  # same bytes
    assert run.metrics().equals(local.metrics()) and run.verify() == []
    with pytest.raises(CheckpointImportError, match=r"--out .*imported already holds a run"):
        import_checkpoints(tmp_path / "seed", spec, where, progress=False)
