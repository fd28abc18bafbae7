"""Which search folders this user wrote: ``--resume`` unpickles a folder's Tune and searcher state
(pickle runs code), so only a folder whose search this user started there is resumed unasked.

Each search records, when it writes ``search_state.json``, the folder and the random id of its
search in the user's own state folder (``$SWEETSPOT_STATE_DIR``, else ``$XDG_STATE_HOME/sweetspot``,
else ``~/.sweetspot``), one small JSON file per folder. A resume reads that record: a folder with
no record (it came from elsewhere, or was moved) or another search's id is refused, unless the user
says they trust it (``--trust-resume``), after which it is recorded as theirs.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from modules.atomic import write_json_atomic
from modules.errors import SweetspotWarning
from search.errors import SearchError

#: Overrides where the records live (tests, or a shared home folder).
STATE_DIR_ENV = "SWEETSPOT_STATE_DIR"


def state_folder() -> Path:
    """The user's own sweetspot state folder (not created here)."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV]).expanduser()
    if os.environ.get("XDG_STATE_HOME"):
        return Path(os.environ["XDG_STATE_HOME"]).expanduser() / "sweetspot"
    return Path.home() / ".sweetspot"


def _record_path(output: Path) -> Path:
    folder = str(Path(output).resolve())
    return state_folder() / "searches" / f"{hashlib.sha256(folder.encode()).hexdigest()[:32]}.json"


def record_search(output: Path, search_id: str) -> None:
    """Note that this user's search ``search_id`` writes ``output`` (its state may be resumed).

    A state folder that cannot be written (a read-only home on a cluster) does not stop the search:
    it warns that a resume of this folder will need ``--trust-resume``."""
    path = _record_path(output)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"folder": str(Path(output).resolve()), "search_id": search_id})
    except OSError as error:
        warnings.warn(
            f"cannot record in {path.parent} that you wrote {output} ({error}); a --resume of it will need"
            f" --trust-resume. Set {STATE_DIR_ENV} to a folder you can write to avoid this",
            SweetspotWarning, stacklevel=2,
        )


def _read_record(output: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(_record_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("folder") == str(Path(output).resolve()) else None


def check_resume_trusted(output: Path, search_id: str) -> None:
    """Refuse to resume ``output`` unless this user's record says its search ``search_id`` wrote it."""
    record = _read_record(output)
    if record is not None and record.get("search_id") == search_id:
        return
    why = (
        "no search of yours was recorded as writing it (it came from elsewhere, was moved or copied,"
        f" or your records in {state_folder()} are from another home folder)"
        if record is None
        else f"it now holds search {search_id!r}, not the search {record.get('search_id')!r} you started there"
    )
    raise SearchError(
        f"--resume: {output} was not written by you: {why}. Resuming unpickles the Tune and searcher state"
        " in that folder, which can run any code. If you know where the folder comes from (for example a"
        " job's volume on a cluster with a fresh home folder), pass --trust-resume (trust_resume=True in"
        " Python); otherwise start the search again in another --output"
    )
