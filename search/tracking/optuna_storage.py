"""``--optuna-storage URL``: the search's and the calibration's Optuna studies kept in a storage.

Names (what ``optuna-dashboard URL`` lists):

- ``sweetspot-search-<search id>``: the sampler's study of a search (the id is in the search
  folder's ``search_state.json`` and ``search_summary.json``); ``--resume`` continues it.
- ``sweetspot-calibrate-<id>``: one per ``calibrate`` call (the id is in its report).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from search.errors import SearchError

SEARCH_PREFIX = "sweetspot-search-"
CALIBRATE_PREFIX = "sweetspot-calibrate-"


def search_study_name(search_id: str) -> str:
    return f"{SEARCH_PREFIX}{search_id}"


def calibrate_study_name(calibration_id: str) -> str:
    return f"{CALIBRATE_PREFIX}{calibration_id}"


def storage_url(url: str | os.PathLike[str]) -> str:
    """The URL with a relative sqlite path made absolute (trials may ask from another directory);
    a plain file path is taken as a sqlite database."""
    text = str(url)
    if "://" not in text:
        return f"sqlite:///{Path(text).resolve()}"
    if text.startswith("sqlite:///") and not text.startswith("sqlite:////"):
        relative = text.removeprefix("sqlite:///")
        if relative and relative != ":memory:":
            return f"sqlite:///{Path(relative).resolve()}"
    return text


def open_storage(url: str | os.PathLike[str], param: str = "optuna_storage") -> Any:
    """An Optuna storage for ``url``, refused with what to do when it cannot be opened."""
    import optuna

    text = storage_url(url)
    if text.startswith("sqlite:///"):
        folder = Path(text.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise SearchError(f"{url}: folder {folder} does not exist; create it or name another database", param=param)
    try:
        return optuna.storages.get_storage(text)
    except Exception as error:  # noqa: BLE001 - SQLAlchemy's errors differ by backend
        raise SearchError(
            f"{url}: Optuna cannot open this storage ({type(error).__name__}: {error}); give an RDB URL such"
            " as sqlite:///search.db or postgresql://user@host/db",
            param=param,
        ) from None


__all__ = ["calibrate_study_name", "open_storage", "search_study_name", "storage_url"]
