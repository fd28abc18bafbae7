"""What every layout must do with a real run of its library: be the one layout detected, import
every checkpoint bit-exactly under its index, and carry the library's own logged metrics."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from modules.importing.importer import import_checkpoints
from modules.importing.layouts import LAYOUTS, detect_layouts
from modules.rundir.run_dir import RunDir
from modules.spec.schema import Spec
from tests.modules.importing.layouts._runs import same_bits


def assert_conforms(
    layout: str,
    source: Path,
    out: Path,
    spec: Spec,
    expected: dict[int, dict[str, torch.Tensor]],
    index: str,
    metrics: dict[tuple[int, str], float] | None = None,
    **options,
):
    """Import ``source`` (detected, not named) and check it against what the library wrote."""
    assert layout in LAYOUTS
    if layout != "pattern":
        assert list(detect_layouts(source)) == [layout]
    report = import_checkpoints(source, spec, out, progress=False, **options)
    assert report.layout == layout and report.index == index
    run = RunDir(out)
    assert run.index == index and run.epochs == sorted(expected)
    for number, state in expected.items():
        stored = run.state_dict(number)
        assert sorted(stored) == sorted(state), number
        assert all(same_bits(stored[k], t) for k, t in state.items()), number
    assert run.verify() == []
    stored_metrics = run.metrics()
    for (number, name), value in (metrics or {}).items():
        row = stored_metrics[(stored_metrics["epoch"] == number) & (stored_metrics["metric"] == name)]
        assert len(row) == 1, (number, name)
        assert math.isclose(float(row["value"].iloc[0]), value, rel_tol=0, abs_tol=0), (number, name)
    return report, run
