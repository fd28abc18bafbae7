"""Exceptions raised by sweetspot; each message names the file, key or value and the fix."""

from __future__ import annotations


class SweetspotError(Exception):
    """Base class: a problem the user can act on, described in one or more sentences."""


class SpecError(SweetspotError, ValueError):
    """The module-group spec (sweetspot.yaml) is invalid or does not fit the model."""


class RunDirError(SweetspotError):
    """A run directory is missing, incomplete, corrupt or of an unknown format."""


class CheckpointImportError(SweetspotError):
    """Checkpoints in another layout could not be imported."""


class UnsafeCheckpointError(CheckpointImportError):
    """A checkpoint would need arbitrary unpickling (code execution) to load; it is refused."""


class CombineError(SweetspotError, ValueError):
    """A combine or evaluate request cannot be carried out (bad sources, keys, output path)."""


class EvaluationError(SweetspotError, ValueError):
    """An evaluation cannot be carried out as asked (inconsistent losses, missing baselines input)."""
