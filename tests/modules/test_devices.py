"""--device: auto picks a GPU only when there is one; a missing GPU or a typo is a clear error."""

from __future__ import annotations

import pytest
import torch

from modules.devices import resolve_device
from modules.errors import SweetspotError


def test_auto_and_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_that_is_not_there_is_refused() -> None:
    with pytest.raises(SweetspotError, match="device cuda.* asked for a GPU but torch sees none; use cpu"):
        resolve_device("cuda")


def test_a_typo_is_refused() -> None:
    with pytest.raises(SweetspotError, match="'gpu0' is not a torch device"):
        resolve_device("gpu0")
