"""``search(...)``: the whole search step as one call (what ``sweetspot search`` runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from analysis.evaluation.baselines import analysis_for
from modules.atomic import check_output_folder
from modules.errors import SpecError
from modules.rundir import RunDir
from modules.spec import Spec, load_spec
from search.cluster import start_ray
from search.config import SearchConfig
from search.errors import SearchError
from search.results import SearchResult
from search.run import run_search


def resolve_spec(run: RunDir, spec: Spec | str | os.PathLike[str] | None, trust_run_spec: bool) -> Spec:
    """The user's own spec, or the run's stored one when explicitly trusted (a spec runs code)."""
    if isinstance(spec, Spec):
        return spec
    if spec is not None:
        return load_spec(spec)
    stored = run.spec_path()
    if stored is None:
        raise SpecError(f"run {run.path} stores no spec; pass your sweetspot.yaml (--spec)")
    if not trust_run_spec:
        raise SpecError(
            f"the search runs the spec's model, data and evaluate code; run {run.path} stores a spec, but"
            " a run directory may come from elsewhere. Pass your own spec (--spec sweetspot.yaml), or"
            " --trust-run-spec (trust_run_spec=True) if you trust the run's stored spec"
        )
    return load_spec(stored)


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
    evaluate: bool = True,
    device: str = "cpu",
    progress: bool = True,
    selections: list[dict[str, list[int]]] | None = None,
    **settings: Any,
) -> SearchResult:
    """Search crossover selections of ``run`` on Ray; write every output into ``output``.

    ``settings`` are ``SearchConfig`` fields (``num_samples=200, algo="tpe", ...``) when no
    ``config`` is given; ``selections`` scores exactly those (group -> epochs) instead of searching. The test split is used once, after the search, by the evaluate step.
    """
    from search.holdout import evaluate_pick
    from search.report import write_search_outputs

    config = config or SearchConfig(**settings)
    run = run if isinstance(run, RunDir) else RunDir(run)
    output = check_output_folder(output)
    spec = resolve_spec(run, spec, trust_run_spec)
    if analysis is not None and not Path(analysis).is_dir():
        raise SearchError(f"analysis folder {analysis} does not exist; pass the folder `sweetspot analyze` wrote")
    info, _note = analysis_for(run, analysis, spec)
    start_ray(address, config)  # an unreachable cluster or missing GPUs show before data is loaded
    data = spec.load_data()
    result = run_search(run, spec, output, config, info, data, address, resume, progress, selections)
    if evaluate:
        evaluate_pick(result, run, spec, data, info, device=device, progress=progress)
    write_search_outputs(result, output, str(run.path), run.epochs)
    return result
