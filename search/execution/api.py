"""``search(...)``: the whole search step as one call (what ``sweetspot search`` runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from analysis.evaluation.baselines import analysis_for
from modules.atomic import check_output_folder
from modules.errors import UserCodeError
from modules.rundir.run_dir import RunDir
from modules.rundir.run_spec import as_run, check_spec_fits_run, spec_for_run
from modules.spec.schema import Spec
from search.algorithms import Algorithm
from search.errors import SearchError
from search.execution.cluster import start_ray_for_search
from search.execution.config import SearchConfig
from search.execution.search_state import check_outputs
from search.tracking.mlflow_runs import log_search, mlflow_run

if TYPE_CHECKING:
    from search.execution.results import SearchResult

#: What the driver imports only after Ray is up, imported while it starts (seconds of waiting):
#: the search itself (torch, Ray Tune), the outputs and plots (matplotlib), and MLflow, which Ray
#: Tune imports to count the callbacks it is given (``ray.air._internal.usage.tag_callbacks``);
#: with the evaluate step, it too (SciPy).
AFTER_RAY_START = (
    "search.execution.search_run",
    "search.execution.search_report",
    "search.execution.search_plots",
    "ray.air.integrations.mlflow",
)


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
    algorithm: Algorithm | None = None,
    mlflow: str | os.PathLike[str] | None = None,
    optuna_storage: str | os.PathLike[str] | None = None,
    **settings: Any,
) -> SearchResult:
    """Search crossover selections of ``run`` on Ray; write every output into ``output``.

    ``settings`` are ``SearchConfig`` fields (``num_samples=200, algo="tpe", ...``) when no
    ``config`` is given; ``selections`` scores exactly those (group -> epochs) instead of
    searching. ``algorithm`` is an algorithm instance you built (``TPE(startup_trials=20)``, or
    your own ``Algorithm`` subclass), as Optuna takes a sampler; it replaces ``algo``. The test
    split is used once, after the search, by the evaluate step.

    ``mlflow`` (a tracking URI, or a folder) logs the search as an MLflow run with a child run per
    trial and the outputs as artifacts; ``optuna_storage`` (e.g. ``sqlite:///search.db``) keeps the
    Optuna sampler's study there as ``sweetspot-search-<search id>`` (``--resume`` continues it).

    ``resume`` continues the search in ``output``; since that unpickles the folder's Tune and
    searcher state, a folder this user's records do not show them writing is refused unless
    ``trust_resume`` (for a folder you know, e.g. a job's volume seen from a fresh home folder).
    """
    if config is not None and settings:
        raise SearchError(f"pass either config= or settings ({sorted(settings)}), not both")
    if config is None or algorithm is not None:
        try:
            if algorithm is not None:
                base = config.model_dump(exclude={"algo", "algo_params", "algorithm"}) if config is not None else settings
                config = SearchConfig.with_algorithm(algorithm, **base)
            else:
                config = SearchConfig(**settings)
        except ValidationError as error:
            first = error.errors()[0]
            raise SearchError(f"{first.get('input')!r}: {first['msg']}", param=str(first["loc"][0])) from None
    run = as_run(run)
    output = check_output_folder(output)
    spec, spec_file = spec_for_run(spec, run, trust_run_spec=trust_run_spec, purpose="the search")
    check_spec_fits_run(spec, run, spec_file)
    if analysis is not None and not Path(analysis).is_dir():
        raise SearchError(f"analysis folder {analysis} does not exist; pass the folder `sweetspot analyze` wrote")
    check_outputs(run, spec, output, config, resume, trust_resume)  # before Ray's start-up seconds
    info, analysis_note = (None, "a given list of selections: no analysis") if selections is not None else analysis_for(run, analysis, spec)
    with mlflow_run(mlflow, f"search {run.label}", "search") as tracker:
        # an unreachable cluster or missing GPUs show before data is loaded
        evaluate_step = ("search.execution.final_evaluation",) if evaluate else ()
        start_ray_for_search(address, config, meanwhile=AFTER_RAY_START + evaluate_step)
        from search.execution.search_run import run_search

        data = spec.load_data()
        result = run_search(
            run, spec, output, config, info, data, address, resume, progress, selections, optuna_storage,
            trust_resume
        )
        result.notes.append(analysis_note)
        from search.execution.search_report import write_search_outputs

        write_search_outputs(result, output, run.label, run.epochs)  # the search is safe on disk first
        if evaluate:
            from search.execution.final_evaluation import evaluate_pick

            try:
                evaluate_pick(result, run, spec, data, info, device=device, progress=progress)
            except UserCodeError as error:  # e.g. the evaluate code fails on some checkpoints
                raise UserCodeError(
                    f"the search finished and wrote its results to {output} (search_report.md), but its final"
                    f" evaluation failed: {error}", error.user_traceback,
                ) from error
            write_search_outputs(result, output, run.label, run.epochs, plots=False)
        log_search(tracker, result, output, run.label)
    return result
