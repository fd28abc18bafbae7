"""Which spec a step uses: the user's own (object or file), else the copy stored in the run.

A spec names Python callables, so using one runs code. A run directory may come from elsewhere:
its stored spec is read for groups, couplings and metrics (no import), but its callables are used
only when the caller says so (``trust_run_spec=True``, ``--trust-run-spec``).
"""

from __future__ import annotations

import os
from pathlib import Path

from modules.errors import SpecError
from modules.rundir.run_dir import RunDir
from modules.rundir.store import RunLocation, RunStore, is_uri
from modules.spec.schema import Spec, load_spec

SpecLike = Spec | str | os.PathLike[str]


def as_spec(spec: SpecLike) -> tuple[Spec, Path | None]:
    """A spec object, and the file it came from (None when given as an object).

    A spec read from a file is the user's own: every callable it names must import now, so a typo
    in ``model:`` is reported at the first step rather than at the step that calls it.
    """
    if isinstance(spec, Spec):
        return spec, None
    loaded = load_spec(spec)
    loaded.check_callables()
    return loaded, Path(spec)


def stored_spec(run: RunDir) -> tuple[Spec, Path] | None:
    """The spec stored in ``run`` for its groups, couplings and metrics; its callables are not trusted."""
    stored = run.spec_path()
    return (load_spec(stored), stored) if stored is not None else None


def spec_for_run(
    spec: SpecLike | None, run: RunDir | None, *, trust_run_spec: bool = False, purpose: str = "this step"
) -> tuple[Spec, Path | None]:
    """The spec whose callables ``purpose`` runs: ``spec`` when given, else the run's stored one,
    which runs code and is used only with ``trust_run_spec``."""
    if spec is not None:
        return as_spec(spec)
    stored = run.spec_path() if run is not None else None
    if stored is None:
        where = f"the run directory {run.label} stores none" if run is not None else "there is no run directory"
        raise SpecError(f"no spec: pass the sweetspot.yaml the run was recorded with, --spec ({where})")
    if not trust_run_spec:
        raise SpecError(
            f"{purpose} runs the spec's model, data and evaluate code; run {run.label} stores a spec, but a run"
            " directory may come from elsewhere. Pass your own spec (--spec sweetspot.yaml), or"
            " --trust-run-spec (trust_run_spec=True) if you trust the run's stored spec"
        )
    return load_spec(stored), stored


def check_spec_fits_run(spec: Spec, run: RunDir, spec_file: Path | None = None) -> None:
    """Refuse a spec whose groups do not cover the run's parameters as the run's groups do (a group
    whose patterns match no key, a key no pattern matches), as ``import`` refuses it."""
    where = f"spec {spec.name!r}" + (f" ({spec_file})" if spec_file else "")
    keys = [k for g in run.groups for k in run.group_keys(g)]
    try:
        assigned = spec.assign_groups(keys)
    except SpecError as error:
        raise SpecError(f"{where} does not fit run {run.label}: {error}") from None
    empty = [g for g, found in assigned.items() if not found]
    if empty:
        patterns = {g: spec.groups[g] for g in empty}
        raise SpecError(
            f"{where} does not fit run {run.label}: the patterns of group(s) {patterns} match no parameter (its keys look like"
            f" {', '.join(repr(k) for k in keys[:3])}); pass the spec the run was recorded with, or fix the patterns"
        )


def as_run(run: RunDir | RunLocation) -> RunDir:
    """A run directory object from an object, a path, a URI or a ``(FileSystem, root)`` pair."""
    return run if isinstance(run, RunDir) else RunDir(run)


def run_or_folder(run: RunDir | RunLocation) -> RunDir | Path:
    """A ``RunDir`` for a run object, a URI or a ``(FileSystem, root)`` pair; a local path stays a
    path (a run directory, or a checkpoint folder that a step imports on the fly)."""
    if isinstance(run, RunDir):
        return run
    if is_uri(run) or isinstance(run, (tuple, RunStore)):
        return RunDir(run)
    return Path(run)
