"""Errors and warnings of the sweet-spot analysis."""

from __future__ import annotations

from modules.errors import SweetspotError, SweetspotWarning


class AnalysisError(SweetspotError, ValueError):
    """A run, its metrics or the thresholds cannot be analysed as given."""


class AnalysisWarning(SweetspotWarning):
    """Something in the run was skipped or approximated; the analysis went on."""
