"""``sweetspot search`` on the command line: bad values are refused by flag, before Ray starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayjobs import cli
from tests.modules import _tiny


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny.record_run(tmp_path_factory.mktemp("tiny") / "run")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-samples", "0"], "--num-samples 0: Input should be greater than or equal to 1"),
        (["--confirm-fraction", "0.95"], "--confirm-fraction 0.95: Input should be less than 0.9"),
        (["--pool-memory", "lots"], "--pool-memory 'lots'"),
        ([], "--trust-run-spec"),
        (["--algo", "hyperband"], "--algo 'hyperband': unknown algorithm 'hyperband'"),
    ],
)
def test_bad_values_are_named_by_their_flag(tiny_run: Path, tmp_path: Path, capsys, flags: list[str], message: str) -> None:
    code = cli.main(["search", "--checkpoint-dir", str(tiny_run), "--output", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "out").exists()


def test_other_commands_do_not_import_ray() -> None:
    import subprocess
    import sys

    check = "import sys, contextlib, io\nfrom rayjobs import cli\nwith contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n    cli.main(['analyze', '--help'])\nprint('ray' in sys.modules, 'optuna' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True).stdout.split() == ["False", "False"]
