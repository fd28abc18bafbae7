"""``import_run``: a training run's checkpoints (plus metrics) in any layout of ``modules.importing.layouts`` into a run directory."""

from __future__ import annotations

import os

from modules.importing.importer import ImportReport, import_checkpoints
from modules.rundir.run_spec import SpecLike, as_spec


def import_run(
    source: str | os.PathLike[str],
    spec: SpecLike,
    out: str | os.PathLike[str],
    *,
    skip_bad: bool = False,
    progress: bool = False,
    pattern: str | list[str] | None = None,
    allow_globals: tuple[str, ...] | list[str] = (),
    layout: str | None = None,
    strip_prefix: str | None = None,
) -> ImportReport:
    """Import the checkpoints (and metrics.csv / metrics.jsonl) in ``source`` into the new run ``out``,
    grouped by ``spec`` (an object or a sweetspot.yaml path), without unpickling code.

    ``skip_bad`` skips truncated or corrupt checkpoints (listed in the report) instead of failing;
    ``pattern`` (a regex with an ``epoch`` group, or a ``{epoch}`` template; several allowed) names
    checkpoints other than ``checkpoint_epoch_<N>.pt``; ``allow_globals`` (``module.Name``) lets
    those types in a checkpoint be loaded for real rather than as inert placeholders. ``layout``
    (``seed``, ``hf-trainer``, ``lightning``, ``dcp``, ``pattern``) says how ``source`` is laid out;
    by default it is detected. ``strip_prefix`` (``"model."``) keeps only the keys under it, without it
    (a LightningModule's attribute, DCP's ``{"model": ...}``).
    """
    spec_obj, _ = as_spec(spec)
    return import_checkpoints(
        source, spec_obj, out, skip_bad=skip_bad, progress=progress, pattern=pattern, allow_globals=allow_globals,
        layout=layout, strip_prefix=strip_prefix,
    )
