"""``search(...)``: the whole search step as one call (what ``sweetspot search`` runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from analysis.evaluation.baselines import analysis_for
from modules.atomic import check_output_folder
from modules.rundir.run_dir import RunDir
from modules.rundir.run_spec import as_run, spec_for_run
from modules.spec.schema import Spec
from search.errors import SearchError
from search.execution.cluster import start_ray
from search.execution.config import SearchConfig
from search.execution.results import SearchResult
from search.execution.search_run import run_search


def search(
    run: RunDir | str | os.PathLike[str],
    output: str | os.PathLike[str],
    spec: Spec | str | os.PathLike[str] | None = None,
    *,
    trust_run_spec: bool = False,
    config: SearchConfig | None = None,
    analysis: str | os.PathLike[str] | None = None,
    address: str | None = None,
    resume: bool = False,
    trust_resume: bool = False,
    evaluate: bool = True,
    device: str = "cpu",
    progress: bool = True,
    selections: list[dict[str, list[int]]] | None = None,
    **settings: Any,
) -> SearchResult:
    """Search crossover selections of ``run`` on Ray; write every output into ``output``.

    ``settings`` are ``SearchConfig`` fields (``num_samples=200, algo="tpe", ...``) when no
    ``config`` is given; ``selections`` scores exactly those (group -> epochs) instead of
    searching. The test split is used once, after the search, by the evaluate step.

    ``resume`` continues the search in ``output``; since that unpickles the folder's Tune and
    searcher state, a folder this user's records do not show them writing is refused unless
    ``trust_resume`` (for a folder you know, e.g. a job's volume seen from a fresh home folder).
    """
    from search.execution.final_evaluation import evaluate_pick
    from search.execution.search_report import write_search_outputs

    if config is not None and settings:
        raise SearchError(f"pass either config= or settings ({sorted(settings)}), not both")
    if config is None:
        try:
            config = SearchConfig(**settings)
        except ValidationError as error:
            first = error.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else "settings"
            raise SearchError(f"{first.get('input')!r}: {first['msg']}", param=name) from None
    run = as_run(run)
    output = check_output_folder(output)
    spec, _ = spec_for_run(spec, run, trust_run_spec=trust_run_spec, purpose="the search")
    if analysis is not None and not Path(analysis).is_dir():
        raise SearchError(f"analysis folder {analysis} does not exist; pass the folder `sweetspot analyze` wrote")
    info, analysis_note = (None, "a given list of selections: no analysis") if selections is not None else analysis_for(run, analysis, spec)
    start_ray(address, config)  # an unreachable cluster or missing GPUs show before data is loaded
    data = spec.load_data()
    result = run_search(
        run, spec, output, config, info, data, address, resume, progress, selections, trust_resume=trust_resume
    )
    result.notes.append(analysis_note)
    write_search_outputs(result, output, run.label, run.epochs)  # the search is safe on disk first
    if evaluate:
        evaluate_pick(result, run, spec, data, info, device=device, progress=progress)
        write_search_outputs(result, output, run.label, run.epochs)
    return result
