"""Checkpoint file names -> epochs: the default names, Lightning's, and user patterns."""

from __future__ import annotations

import pytest

from modules.errors import CheckpointImportError
from modules.importing.checkpoint_names import compile_pattern, epoch_of_file


@pytest.mark.parametrize(
    ("name", "epoch"),
    [
        ("checkpoint_epoch_7.pt", 7),
        ("checkpoint_epoch_12.pth", 12),
        ("checkpoint_epoch_3.safetensors", 3),
        ("epoch=4-step=500.ckpt", 4),
        ("epoch=0.ckpt", 0),
        ("checkpoint_epoch_7.pt.bak", None),
        ("last.ckpt", None),
        ("epoch_3.pt", None),
    ],
)
def test_default_names(name: str, epoch: int | None) -> None:
    assert epoch_of_file(f"/some/folder/{name}") == epoch


@pytest.mark.parametrize(
    ("pattern", "name", "epoch"),
    [
        ("epoch_{epoch}.pt", "epoch_3.pt", 3),
        ("epoch_{epoch}.pt", "epoch_3.pth", None),
        ("epoch_{epoch}.pt", "xepoch_3.pt", None),  # a pattern matches the whole name
        ("step-{epoch}.ckpt", "step-1000.ckpt", 1000),
        (r"model_e(?P<epoch>\d+)\.safetensors", "model_e3.safetensors", 3),
        (r"model_e(?P<epoch>\d+)\.safetensors", "model_e3.safetensors.tmp", None),
        ("run.v2_{epoch}.pt", "run.v2_5.pt", 5),  # template dots are literal
        ("run.v2_{epoch}.pt", "runXv2_5.pt", None),
    ],
)
def test_user_patterns(pattern: str, name: str, epoch: int | None) -> None:
    assert epoch_of_file(name, pattern) == epoch


def test_several_patterns_are_tried_in_turn() -> None:
    patterns = ["epoch_{epoch}.pt", "step-{epoch}.ckpt"]
    assert [epoch_of_file(n, patterns) for n in ("epoch_2.pt", "step-9.ckpt", "other.pt")] == [2, 9, None]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [(r"model_(\d+)\.pt", "has no 'epoch' group"), ("model_(.pt", "not a valid regular expression"), ("{epoch}_{epoch}.pt", "twice")],
)
def test_bad_patterns_say_how_to_write_one(pattern: str, message: str) -> None:
    with pytest.raises(CheckpointImportError, match=message):
        compile_pattern(pattern)
