"""Exceptions raised by sweetspot; each message names the file, key or value and the fix."""

from __future__ import annotations


class SweetspotError(Exception):
    """Base class: a problem the user can act on, described in one or more sentences.

    With ``param`` (the API argument whose value is wrong, e.g. ``"output"``) the message reads
    ``"output /x is a folder; ..."``; a command line names its own option instead (``named``).
    """

    def __init__(self, message: str = "", *, param: str | None = None) -> None:
        super().__init__(f"{param} {message}" if param else message)
        self.param = param
        self.detail = message

    def named(self, name: str) -> str:
        """The message with the value named ``name`` (e.g. ``--output``) instead of the API argument."""
        return f"{name} {self.detail}" if self.param else str(self)


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


def one_line(error: BaseException, limit: int = 500) -> str:
    """``Type: message`` of ``error`` on one line (a record's or a report's field), at most ``limit`` characters."""
    return " ".join(f"{type(error).__name__}: {error}".split())[:limit]


class UserCodeError(EvaluationError):
    """The spec's own code (its evaluate callable) raised while sweetspot ran it; ``user_traceback``
    is where (a command line prints it above the ``error:`` line)."""

    def __init__(self, message: str, user_traceback: str) -> None:
        super().__init__(message)
        self.user_traceback = user_traceback


class SweetspotWarning(UserWarning):
    """Something the user should check; the step went on (a command line prints it as ``warning: ...``)."""


class CombineWarning(SweetspotWarning):
    """A combination the library built but doubts, e.g. one that breaks a coupling of the spec."""
