"""``import_run``: a folder of ``checkpoint_epoch_<N>.pt`` files (plus metrics) into a run directory."""

from __future__ import annotations

import os

from modules.importer import ImportReport, import_checkpoints
from modules.run_spec import SpecLike, as_spec


def import_run(
    source: str | os.PathLike[str],
    spec: SpecLike,
    out: str | os.PathLike[str],
    *,
    skip_bad: bool = False,
    progress: bool = False,
    pattern: str | list[str] | None = None,
    allow_globals: tuple[str, ...] | list[str] = (),
) -> ImportReport:
    """Import the checkpoints (and metrics.csv / metrics.jsonl) in ``source`` into the new run ``out``,
    grouped by ``spec`` (an object or a sweetspot.yaml path), without unpickling code.

    ``skip_bad`` skips truncated or corrupt checkpoints (listed in the report) instead of failing;
    ``pattern`` (a regex with an ``epoch`` group, or a ``{epoch}`` template; several allowed) names
    checkpoints other than ``checkpoint_epoch_<N>.pt``; ``allow_globals`` (``module.Name``) lets
    those types in a checkpoint be loaded for real rather than as inert placeholders.
    """
    spec_obj, _ = as_spec(spec)
    return import_checkpoints(
        source, spec_obj, out, skip_bad=skip_bad, progress=progress, pattern=pattern, allow_globals=allow_globals
    )
