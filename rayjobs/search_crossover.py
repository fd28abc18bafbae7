"""``sweetspot search``: Ray Tune + Optuna over crossover selections of a run (the design card).

    sweetspot search --checkpoint-dir RUN --output search_results/ (--spec sweetspot.yaml | --trust-run-spec)
    python -m rayjobs.search_crossover ...   (the same, for ray job submit)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from modules.errors import SweetspotError
from rayjobs._entry import run_entry

DESCRIPTION = (
    "Search per-group epoch combinations with Ray Tune + Optuna across CPUs/GPUs; pick on a held-back"
    " part of validation and report the pick against every baseline on the test split."
)
EPILOG = """examples:
  sweetspot search --checkpoint-dir runs/demo --spec runs/demo/sweetspot.yaml --output search/
  sweetspot search --checkpoint-dir runs/demo --trust-run-spec --algo module-soup --num-samples 300 --output search/
  ray job submit --working-dir . -- python -m rayjobs.search_crossover --address auto \\
      --checkpoint-dir /shared/runs/big --spec sweetspot.yaml --gpus-per-trial 0.25 --output /shared/search/

Trials count the baselines searched first (every single epoch, then the greedy soup). --resume continues
an interrupted search in the same --output folder without re-running finished trials."""


class SearchArgumentError(SweetspotError, ValueError):
    """A search option with a value the search cannot take."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint-dir", required=True, metavar="RUN", help="run directory to search")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for trials.parquet, best_selection.json, the reports")
    parser.add_argument("--spec", metavar="YAML", help="your sweetspot.yaml (it names code the search runs)")
    parser.add_argument("--trust-run-spec", action="store_true", help="run the spec stored in the run directory (only for runs you trust)")
    parser.add_argument("--num-samples", type=int, default=200, help="trials in all, baselines included (default 200)")
    parser.add_argument("--algo", default="tpe", help="tpe (default), cmaes, gp, random, grid or module-soup")
    parser.add_argument("--candidates", default="all", choices=["all", "analysis"], help="epochs per group: all recorded, or the analysis's plateau window and neighbours (default all)")
    parser.add_argument("--analysis", metavar="DIR", help="analysis folder (sweetspot analyze): its pick is searched first")
    parser.add_argument("--include-averages", action="store_true", help="also search averaging windows around each epoch")
    parser.add_argument("--max-half-width", type=int, default=2, help="widest averaging window, in checkpoints each side (default 2)")
    parser.add_argument("--confirm-fraction", type=float, default=0.3, help="part of validation held back to pick among the top candidates (default 0.3)")
    bn = parser.add_mutually_exclusive_group()
    bn.add_argument("--update-bn", dest="update_bn", action="store_true", default=None, help="recompute stale BatchNorm statistics before scoring (default: when the model has BatchNorm and the spec has batches)")
    bn.add_argument("--no-update-bn", dest="update_bn", action="store_false", help="score without recomputing BatchNorm statistics")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial, fractional allowed (default 0: CPU)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default 1)")
    parser.add_argument("--max-concurrent", type=int, help="most trials at once (default: as resources allow)")
    parser.add_argument("--shards", type=int, default=4, help="validation shards; ASHA stops poor trials after each (default 4; 1 = no early stopping)")
    parser.add_argument("--pool-memory", default="8GB", help="object-store memory per node for checkpoints (default 8GB)")
    parser.add_argument("--prefix-module", action="append", default=[], metavar="MODULE", help="a submodule whose output is cached per choice (e.g. backbone); repeatable")
    parser.add_argument("--top-k", type=int, default=5, help="top candidates rescored on the confirm part and on test (default 5)")
    parser.add_argument("--no-baselines", action="store_true", help="do not search single epochs and the greedy soup first")
    parser.add_argument("--address", help="Ray cluster to join (auto, or ray://host:10001); default: start a local Ray")
    parser.add_argument("--resume", action="store_true", help="continue the search in --output")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the evaluate step on the test split")
    parser.add_argument("--device", default="cpu", help="device of the final evaluate step (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samplers and of the confirm split (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress line")


_FLAGS = {
    "num_samples": "--num-samples", "confirm_fraction": "--confirm-fraction", "gpus_per_trial": "--gpus-per-trial",
    "cpus_per_trial": "--cpus-per-trial", "max_concurrent": "--max-concurrent", "shards": "--shards",
    "pool_memory": "--pool-memory", "top_k": "--top-k", "max_half_width": "--max-half-width", "algo": "--algo",
}


def config_from(args: argparse.Namespace) -> Any:
    """The search settings; Ray and Optuna are imported only now, so other commands start fast."""
    from search.config import SearchConfig

    try:
        return SearchConfig(
            num_samples=args.num_samples, algo=args.algo, candidates=args.candidates,
            include_averages=args.include_averages, max_half_width=args.max_half_width,
            confirm_fraction=args.confirm_fraction, update_bn=args.update_bn,
            gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial,
            max_concurrent=args.max_concurrent, shards=args.shards, pool_memory=args.pool_memory,
            prefix_modules=tuple(args.prefix_module), top_k=args.top_k, baselines=not args.no_baselines,
            seed=args.seed,
        )
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else ""
            problems.append(f"{_FLAGS.get(field, '--' + field.replace('_', '-'))} {item.get('input')!r}: {item['msg']}")
        raise SearchArgumentError("; ".join(problems)) from None


def run(args: argparse.Namespace) -> int:
    from search.api import search

    config = config_from(args)
    result = search(
        args.checkpoint_dir, args.output, args.spec, trust_run_spec=args.trust_run_spec, config=config,
        analysis=args.analysis, address=args.address, resume=args.resume, evaluate=not args.no_evaluate,
        device=args.device, progress=not args.no_progress,
    )
    pick = result.pick
    scores = ", ".join(f"{name} {value:.5g}" for name, value in (("search", pick.search_score), ("confirm", pick.confirm_score), ("test", pick.test_score)) if value is not None)
    print(f"search pick ({pick.origin}): {result.objective} {scores}")
    for group, epochs in pick.epochs.items():
        print(f"  {group}: {epochs[0] if len(epochs) == 1 else epochs}")
    print(f"{len(result.trials)} trials in {result.seconds:.1f} s ({result.trials_per_second:.2f}/s); wrote {args.output}/search_report.md")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry("python -m rayjobs.search_crossover", DESCRIPTION, add_arguments, run, argv, EPILOG)


if __name__ == "__main__":
    sys.exit(main())
