"""A spec runs code: a run's stored spec only when trusted; the user's own is checked at the first step."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import sweetspot
from modules.errors import SpecError
from modules.spec.schema import load_spec, parse_spec
from tests.modules import _tiny


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny.record_run(tmp_path_factory.mktemp("tiny") / "run", epochs=6)


@pytest.fixture
def hostile_run(tiny_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A real tiny run whose stored spec's model is ``os:system`` with a command that leaves a marker."""
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    marker = tmp_path / "ran"
    stored = yaml.safe_load((run / "sweetspot.yaml").read_text())
    stored["model"] = "os:system"
    stored["model_args"] = {"command": f"touch {marker}"}
    (run / "sweetspot.yaml").write_text(yaml.safe_dump(stored))
    return run, marker


def test_a_stored_spec_is_never_called_without_trust(hostile_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, marker = hostile_run
    both = r"--spec sweetspot\.yaml.*--trust-run-spec \(trust_run_spec=True\)"
    with pytest.raises(SpecError, match=rf"^evaluate runs the spec's model, data and evaluate code.*{both}"):
        sweetspot.evaluate(run, {"encoder": 3, "middle": 3, "head": 3}, resamples=10)
    with pytest.raises(SpecError, match=rf"^recomputing BatchNorm statistics \(--update-bn\) runs .*{both}"):
        sweetspot.combine(run, {"encoder": 3, "middle": 3, "head": 3}, update_bn=True)
    # reading the stored spec's groups and couplings imports nothing: combine without --update-bn works
    combined = sweetspot.combine(run, {"encoder": 3, "middle": 3, "head": 3})
    assert set(combined.state_dict) == set(_tiny.build_model().state_dict())
    sweetspot.analyze(run)
    assert not marker.exists()


def test_the_cli_names_both_ways_out(hostile_run: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    from rayjobs import cli

    run, marker = hostile_run
    code = cli.main(["evaluate", "--checkpoint-dir", str(run), "--selection", str(_selection(tmp_path)),
                     "--output", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert code == 2 and "--spec sweetspot.yaml" in err and "--trust-run-spec" in err
    assert not marker.exists() and not (tmp_path / "eval").exists()


def test_a_trusted_spec_whose_model_is_no_module_says_so(hostile_run: tuple[Path, Path]) -> None:
    run, marker = hostile_run
    stored = yaml.safe_load((run / "sweetspot.yaml").read_text())
    stored["model"], stored["model_args"] = "builtins:dict", {}
    (run / "sweetspot.yaml").write_text(yaml.safe_dump(stored))
    with pytest.raises(SpecError, match=r"model callable 'builtins:dict' of spec 'tiny' returned dict, not a torch\.nn\.Module"):
        sweetspot.evaluate(run, {"encoder": 3, "middle": 3, "head": 3}, resamples=10, trust_run_spec=True)


def not_splits(**_: object) -> list:
    return [1, 2]


def only_val(**_: object) -> dict:
    return {"val": _tiny.load_data()["val"]}


def test_load_data_must_return_the_splits_the_step_needs() -> None:
    spec = parse_spec({**_tiny.SPEC, "data": "tests.modules.rundir.test_run_spec:not_splits"})
    with pytest.raises(SpecError, match=r"returned list, not a mapping of splits; return e\.g\. \{'train': \.\.\."):
        spec.load_data(("train",))
    spec = parse_spec({**_tiny.SPEC, "data": "tests.modules.rundir.test_run_spec:only_val"})
    assert set(spec.load_data(("val",))) == {"val"}  # the recorder needs only val
    with pytest.raises(SpecError, match=r"returned splits \['val'\]; this step also needs \['train'\]"):
        spec.load_data(("train",))


def _write_spec(folder: Path, model: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweetspot.yaml"
    path.write_text(yaml.safe_dump({**_tiny.SPEC, "model": model}))
    return path


def test_a_broken_model_path_in_the_users_spec_fails_at_import_analyze_and_combine(tiny_run: Path, tmp_path: Path) -> None:
    run = tiny_run
    seed = tmp_path / "seed"
    seed.mkdir()
    for epoch in (1, 2):
        torch.save(sweetspot.RunDir(run).state_dict(epoch), seed / f"checkpoint_epoch_{epoch}.pt")
    spec = _write_spec(tmp_path / "spec", "tests.modules._tiny:buld_model")
    message = r"model 'tests\.modules\._tiny:buld_model': module 'tests\.modules\._tiny' has no attribute 'buld_model'"
    with pytest.raises(SpecError, match=message):
        sweetspot.import_run(seed, spec, tmp_path / "imported")
    with pytest.raises(SpecError, match=message):
        sweetspot.analyze(run, spec=spec)
    with pytest.raises(SpecError, match=message):
        sweetspot.combine(run, {"encoder": 1, "middle": 1, "head": 1}, spec=spec)
    missing = _write_spec(tmp_path / "spec2", "no_such_module_here:build")
    with pytest.raises(SpecError, match=r"cannot import module 'no_such_module_here'.*is in .*spec2 or "):
        sweetspot.analyze(run, spec=missing)


MODULE = textwrap.dedent('''
    from tests.modules._tiny import Tiny

    def build():
        return Tiny()
''')


def test_the_users_module_is_found_beside_the_spec_and_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    beside = tmp_path / "project"
    beside.mkdir()
    (beside / "beside_spec_model.py").write_text(MODULE)
    spec = load_spec(_write_spec(beside, "beside_spec_model:build"))
    monkeypatch.chdir(tmp_path)  # neither the spec's folder nor on sys.path
    assert isinstance(spec.build_model(), _tiny.Tiny)

    here = tmp_path / "work"
    here.mkdir()
    (here / "cwd_model.py").write_text(MODULE)
    monkeypatch.chdir(here)
    spec = load_spec(_write_spec(tmp_path / "elsewhere", "cwd_model:build"))
    assert isinstance(spec.build_model(), _tiny.Tiny)
    assert str(here) not in os.sys.path  # the path is changed only while importing


def _selection(folder: Path) -> Path:
    path = folder / "selection.json"
    path.write_text('{"encoder": 3, "middle": 3, "head": 3}')
    return path
