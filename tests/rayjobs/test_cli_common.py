"""What every command shares: --version, honest usage, stated defaults, one progress flag, verify."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import pytest

from modules import __version__
from rayjobs import cli
from tests.modules import _tiny


def subparsers() -> dict[str, argparse.ArgumentParser]:
    found = {}
    for name, module_name in cli.SUBCOMMANDS.items():
        module = __import__(module_name, fromlist=["add_arguments"])
        parser = argparse.ArgumentParser(prog=f"sweetspot {name}")
        module.add_arguments(parser)
        found[name] = parser
    return found


def test_version(capsys) -> None:
    with pytest.raises(SystemExit, match="^0$") as exit_info:  # the exit code
        cli.main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"sweetspot {__version__}\n"


def test_every_default_is_stated_in_the_help() -> None:
    for name, parser in subparsers().items():
        for action in parser._actions:
            if action.help in (None, argparse.SUPPRESS) or isinstance(action, (argparse._HelpAction, argparse._StoreFalseAction)):
                continue
            if action.default not in (None, False, [], argparse.SUPPRESS):  # flags default to off
                assert "default" in action.help, f"sweetspot {name} {action.option_strings}: {action.help}"


def test_one_progress_flag_name_and_the_old_one_still_works() -> None:
    for name, parser in subparsers().items():
        if name == "verify":
            continue
        assert parser.parse_args(_required(name) + ["--no-progress"]).no_progress is True, name
    importer = subparsers()["import"]
    assert importer.parse_args(_required("import") + ["--quiet"]).no_progress is True
    assert "--quiet" not in importer.format_help()


def _required(name: str) -> list[str]:
    return {
        "train-demo": ["--out", "x"],
        "import": ["--from", "a", "--spec", "s", "--out", "o"],
        "analyze": ["--checkpoint-dir", "r", "--output", "o"],
        "combine": ["--output", "o"],
        "evaluate": ["--output", "o"],
        "search": ["--checkpoint-dir", "r", "--output", "o"],
        "calibrate": ["--checkpoint-dir", "r", "--search", "s", "--output", "o.json"],
        "auto": ["--checkpoint-dir", "r", "--thresholds", "t.json", "--output", "o"],
        "pipeline": ["--checkpoint-dir", "r", "--output", "o"],
    }[name]


def test_combine_usage_needs_a_run_or_checkpoint_files(capsys) -> None:
    with pytest.raises(SystemExit, match="^0$"):  # the exit code
        cli.main(["combine", "--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert usage.startswith("usage: sweetspot combine --checkpoint-dir RUN (--selection FILE | --group G=E ...)")
    assert "sweetspot combine --spec YAML --<group> FILE ..." in usage
    assert "[--checkpoint-dir" not in usage


def test_verify_reports_problems_and_removes_leftovers(tmp_path: Path, capsys) -> None:
    run = _tiny.record_run(tmp_path / "run", epochs=2)
    assert cli.main(["verify", str(run)]) == 0
    assert "all files match the manifest" in capsys.readouterr().out

    leftover = run / f".manifest.json.{_dead_pid()}-0123abcd.tmp"  # what a kill -9 mid-write leaves
    leftover.write_bytes(b"half")
    assert cli.main(["verify", str(run)]) == 1
    assert f"leftover of an interrupted write: {leftover}" in capsys.readouterr().out
    assert leftover.exists()
    assert cli.main(["verify", str(run), "--clean"]) == 0
    assert f"removed leftover {leftover}" in capsys.readouterr().out and not leftover.exists()

    damaged = run / "epochs" / "2" / "head.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert cli.main(["verify", str(run), "--clean"]) == 1
    assert "head.safetensors: sha256 differs from the manifest" in capsys.readouterr().out
    shutil.rmtree(run)


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1
