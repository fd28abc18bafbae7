"""The layout registry: every layout follows the protocol and has a conformance test on a real run;
the seed's layout and the pattern layout conform as the libraries' layouts do."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from modules.errors import CheckpointImportError
from modules.importing.importer import import_checkpoints
from modules.importing.layouts import LAYOUTS, LayoutOptions, choose_layout
from modules.spec.schema import parse_spec
from tests.modules.importing.layouts._conformance import assert_conforms
from tests.modules.importing.test_importer import SPEC_DATA, write_seed_run

HERE = Path(__file__).parent


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_layout_follows_the_protocol_and_has_a_conformance_test(name: str, tmp_path: Path) -> None:
    layout = LAYOUTS[name]
    assert layout.name == name and layout.looks_for
    assert layout.detect(tmp_path) is None  # an empty folder is no layout
    said = "needs --pattern" if name == "pattern" else rf"^{re.escape(str(tmp_path))} holds no .*; pass the "
    with pytest.raises(CheckpointImportError, match=said):  # names the folder and what to pass instead
        layout.plan(tmp_path, LayoutOptions())
    tests = "".join(path.read_text() for path in HERE.glob("test_*.py"))
    assert f'assert_conforms(\n        "{name}"' in tests or f'assert_conforms("{name}"' in tests


def test_seed_and_pattern_layouts_conform(tmp_path: Path) -> None:
    spec = parse_spec(SPEC_DATA, "spec")
    saved = write_seed_run(tmp_path / "seed", epochs=[2, 4, 6], metrics="epoch,val_loss\n2,0.5\n4,0.25\n6,0.125\n")
    assert_conforms("seed", tmp_path / "seed", tmp_path / "run", spec, saved, "epoch", {(4, "val_loss"): 0.25})
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for epoch in saved:
        shutil.copy(tmp_path / "seed" / f"checkpoint_epoch_{epoch}.pt", renamed / f"weights-{epoch}.pt")
    assert_conforms("pattern", renamed, tmp_path / "run2", spec, saved, "epoch", pattern="weights-{epoch}.pt")


def test_an_unknown_layout_name_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(CheckpointImportError, match=r"--layout 'peft' is not a layout sweetspot reads; choose one of \['seed'"):
        choose_layout(tmp_path, "peft")
    with pytest.raises(CheckpointImportError, match="--layout pattern needs --pattern"):
        import_checkpoints(tmp_path, parse_spec(SPEC_DATA, "spec"), tmp_path / "run", layout="pattern", progress=False)
