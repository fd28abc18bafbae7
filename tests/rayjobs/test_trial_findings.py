"""What a new user met in issue 16's trial, on the tiny real run: combine's output folder, a window
past the run's end, Ctrl-C, a spec whose patterns match no key of the run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import sweetspot
from rayjobs import cli
from tests.modules import _tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("findings")
    run = _tiny.record_run(root / "run")  # epochs 1..6
    spec = root / "sweetspot.yaml"
    spec.write_text(yaml.safe_dump(_tiny.SPEC))
    return run, spec


def test_combine_creates_the_output_folder_and_records_what_a_window_past_the_end_averaged(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, spec = tiny
    out = tmp_path / "missing" / "deeper" / "combined.safetensors"
    code = cli.main(["combine", "--checkpoint-dir", str(run), "--spec", str(spec), "--output", str(out),
                     "--group", "encoder=4-20", "--group", "middle=2", "--group", "head=3"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "window [4, 20] reaches past the recorded epochs 1..6; averaged [4, 5, 6]" in printed.err
    provenance = sweetspot.read_provenance(out)
    assert provenance["selection"]["encoder"] == {"average": [4, 6]}
    assert "average [4, 20]" not in printed.out and "[4, 6]" in printed.out


def test_ctrl_c_in_combine_is_one_line_and_exit_130(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, spec = tiny

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sweetspot, "combine", interrupted)
    code = cli.main(["combine", "--checkpoint-dir", str(run), "--spec", str(spec), "--output", str(tmp_path / "c.pt"), "--group", "encoder=2"])
    err = capsys.readouterr().err
    assert code == 130 and err.strip().splitlines() == ["interrupted (Ctrl-C); no output was left half-written"]


def test_a_spec_whose_patterns_match_no_key_is_refused_by_every_step(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, spec = tiny
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({**_tiny.SPEC, "groups": {**_tiny.SPEC["groups"], "encoder": ["backbone."]}}))
    combined = tmp_path / "c.safetensors"
    assert cli.main(["combine", "--checkpoint-dir", str(run), "--output", str(combined), "--spec", str(spec),
                     "--group", "encoder=2", "--group", "middle=2", "--group", "head=2"]) == 0
    commands = [
        ["analyze", "--checkpoint-dir", str(run), "--spec", str(wrong), "--output", str(tmp_path / "a"), "--no-plots"],
        ["evaluate", "--checkpoint-dir", str(run), "--spec", str(wrong), "--model", str(combined), "--output", str(tmp_path / "e"), "--no-progress"],
        ["search", "--checkpoint-dir", str(run), "--spec", str(wrong), "--output", str(tmp_path / "s"), "--no-progress"],
    ]
    for command in commands:
        capsys.readouterr()
        assert cli.main(command) == 2, command[0]
        err = capsys.readouterr().err
        assert "does not fit run" in err and "'encoder': ['backbone.']" in err, (command[0], err)
    assert not (tmp_path / "s").exists()
    # a group whose patterns match nothing, every key still in some group
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({**_tiny.SPEC, "groups": {**_tiny.SPEC["groups"], "extra": ["nothing."]}}))
    with pytest.raises(sweetspot.SpecError, match=r"\{'extra': \['nothing.'\]\} match no parameter"):
        sweetspot.analyze(run, spec=empty)
