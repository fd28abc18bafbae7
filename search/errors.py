"""The search's own error."""

from __future__ import annotations

from modules.errors import SweetspotError


class SearchError(SweetspotError, ValueError):
    """The search cannot run as asked: bad settings, no GPUs, nothing to resume."""
