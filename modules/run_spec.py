"""Which spec a step uses: the one given (object or file), else the copy stored in the run."""

from __future__ import annotations

import os
from pathlib import Path

from modules.errors import SpecError
from modules.rundir import RunDir
from modules.spec import Spec, load_spec

SpecLike = Spec | str | os.PathLike[str]


def as_spec(spec: SpecLike) -> tuple[Spec, Path | None]:
    """A spec object, and the file it came from (None when given as an object)."""
    if isinstance(spec, Spec):
        return spec, None
    return load_spec(spec), Path(spec)


def spec_for_run(spec: SpecLike | None, run: RunDir | None) -> tuple[Spec, Path | None]:
    """``spec`` when given, else the spec stored in ``run``; with the file it came from."""
    if spec is not None:
        return as_spec(spec)
    stored = run.spec_path() if run is not None else None
    if stored is None:
        where = f"the run directory {run.path} stores none" if run is not None else "there is no run directory"
        raise SpecError(f"no spec: pass the sweetspot.yaml the run was recorded with ({where})")
    return load_spec(stored), stored


def as_run(run: RunDir | str | os.PathLike[str]) -> RunDir:
    """A run directory object from an object or a path."""
    return run if isinstance(run, RunDir) else RunDir(run)
