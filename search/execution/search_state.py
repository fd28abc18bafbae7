"""The search folder's saved state (``search_state.json``) and the checks a search makes of its
run and output folder before anything is loaded or Ray starts (this module imports neither Ray nor
torch, so ``search()`` refuses a bad call before those seconds are spent)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from modules.rundir.run_dir import RunDir
from modules.spec.schema import Spec, dump_spec
from search.errors import SearchError
from search.execution.config import SearchConfig
from search.execution.resume_trust import check_resume_trusted

STATE_NAME = "search_state.json"
TUNE_DIR = "tune"


def check_outputs(
    run: RunDir, spec: Spec, output: Path, config: SearchConfig, resume: bool, trust_resume: bool = False
) -> dict[str, Any] | None:
    """Refuse an output the search cannot write (inside the run, a search there without
    ``--resume``, nothing to resume): cheap, before data is loaded or Ray starts. The saved state."""
    output = Path(output).resolve()
    check_inputs(run, output, config)
    state = read_state(output)
    if resume:
        if state is not None and not trust_resume:  # before anything else of the folder is believed
            check_resume_trusted(output, str(state.get("search_id")))
        check_resume(state, search_state(run, spec, config, state["search_id"] if state else ""), output)
    elif state is not None and (output / TUNE_DIR).exists():
        raise SearchError(
            f"{output} already holds a search; pass --resume to continue it or choose another --output",
            param="output",
        )
    return state


def check_inputs(run: RunDir, output: Path, config: SearchConfig) -> None:
    resolved = output.resolve()
    run_root = run.path.resolve() if run.is_local else None
    if run_root is not None and (resolved == run_root or run_root in resolved.parents):
        raise SearchError(
            f"{output} is inside the run directory {run.path}; the run is input only, write elsewhere", param="output"
        )
    if not run.is_local and run.store.address is None:
        raise SearchError(
            f"run {run.label} was given as a (FileSystem, root) pair, which trials on other processes cannot"
            " reopen; pass the run as a URI (s3://bucket/run?endpoint_override=...) or a local folder"
        )
    if len(run.epochs) < 2:
        raise SearchError(f"run {run.label} has {len(run.epochs)} recorded epoch(s); a search needs at least two")


def read_state(output: Path) -> dict[str, Any] | None:
    path = output / STATE_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


#: The form of Tune's saved state (pickled classes, the trial budget, standby trials): bumped when a
#: folder written before cannot be continued. 3: standby trials, and Tune's budget left to the searcher.
CODE_LAYOUT = 3


def search_state(run: RunDir, spec: Spec, config: SearchConfig, search_id: str) -> dict[str, Any]:
    """What a resumed search must share with the one it continues."""
    settings = config.model_dump(mode="json")
    return {
        "code_layout": CODE_LAYOUT,
        "search_id": search_id,
        "run": run.location,
        "spec": hashlib.sha256(dump_spec(spec).encode()).hexdigest(),
        "settings": {k: v for k, v in settings.items() if k not in ("num_samples", "max_concurrent", "max_failures")},
    }


def check_resume(state: dict[str, Any] | None, now: dict[str, Any], output: Path) -> None:
    if state is None:
        raise SearchError(f"--resume: {output} holds no search to resume ({STATE_NAME} is missing); run without --resume")
    if state.get("code_layout", 1) != CODE_LAYOUT:
        raise SearchError(
            f"--resume: the search in {output} was written by an earlier sweetspot (search state layout"
            f" {state.get('code_layout', 1)}, this one continues layout {CODE_LAYOUT}): Tune's saved state there"
            " names classes or a trial budget this version does not have. Start the search again in another"
            " --output (its trials.parquet and report stay readable)"
        )
    differs = [k for k in ("run", "spec") if state.get(k) != now[k]]
    differs += [k for k, v in now["settings"].items() if state.get("settings", {}).get(k) != v]
    if differs:
        raise SearchError(
            f"--resume: the search in {output} was started with other {', '.join(differs)}; resume it with"
            " the same run, spec and settings, or start a new search in another --output"
        )
