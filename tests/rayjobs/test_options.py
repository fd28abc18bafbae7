"""The seed's ``--<group> FILE`` is plain shorthand for ``--group <group>=FILE`` when a spec is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from modules.errors import CombineError
from modules.spec.schema import dump_spec
from rayjobs.combine_modules import translate_argv
from tests.modules import _tiny


def test_group_options_become_group_choices(tmp_path: Path) -> None:
    spec = tmp_path / "sweetspot.yaml"
    spec.write_text(dump_spec(_tiny.spec()))
    argv = [f"--spec={spec}", "--encoder", "a.pt", "--head=b.pt", "--checkpoint", "run", "--output", "o.pt"]
    assert translate_argv(argv) == [
        f"--spec={spec}", "--group", "encoder=a.pt", "--group", "head=b.pt", "--checkpoint", "run", "--output", "o.pt",
    ]
    plain = ["--checkpoint-dir", "run", "--group", "encoder=3", "--output", "o.pt"]
    assert translate_argv(plain) == plain  # no spec is read when every option is combine's own
    with pytest.raises(CombineError, match="--decoder: neither an option of combine nor a group of spec 'tiny'"):
        translate_argv(["--spec", str(spec), "--decoder", "x.pt"])
    with pytest.raises(CombineError, match="--encoder: no such option without a spec"):
        translate_argv(["--encoder", "x.pt"])
