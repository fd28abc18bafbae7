"""``sweetspot search``: Ray Tune + Optuna over crossover selections of a run (the design card).

    sweetspot search --checkpoint-dir RUN --output search_results/ (--spec sweetspot.yaml | --trust-run-spec)
    python -m rayjobs.search_crossover ...   (the same, for ray job submit)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import sweetspot
from rayjobs._entry import exit_process, run_entry
from rayjobs.options import add_search_settings, add_trust_resume_flag, config_from

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
an interrupted search in the same --output folder without re-running finished trials; it unpickles
the folder's state, so a folder your own searches did not write needs --trust-resume."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint-dir", required=True, metavar="RUN", help="run directory to search")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for trials.parquet, best_selection.json, the reports")
    parser.add_argument("--spec", metavar="YAML", help="your sweetspot.yaml (it names code the search runs)")
    parser.add_argument("--trust-run-spec", action="store_true", help="run the spec stored in the run directory (only for runs you trust)")
    parser.add_argument("--analysis", metavar="DIR", help="analysis folder (sweetspot analyze): its pick is searched first")
    add_search_settings(parser)
    parser.add_argument("--address", help="Ray cluster to join (auto, or ray://host:10001); default: start a local Ray")
    parser.add_argument("--resume", action="store_true", help="continue the search in --output")
    add_trust_resume_flag(parser)
    parser.add_argument("--no-evaluate", action="store_true", help="skip the evaluate step on the test split")
    parser.add_argument("--device", default="cpu", help="device of the final evaluate step (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress line")
    parser.add_argument("--mlflow", metavar="URI", help="log the search to MLflow: a parent run, a child run per trial, the reports as artifacts (a tracking URI or a folder)")
    parser.add_argument("--optuna-storage", metavar="URL", help="keep the Optuna study there (e.g. sqlite:///search.db) as sweetspot-search-<id>, for optuna-dashboard")


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    result = sweetspot.search(
        args.checkpoint_dir, args.output, args.spec, trust_run_spec=args.trust_run_spec, config=config,
        analysis=args.analysis, address=args.address, resume=args.resume, trust_resume=args.trust_resume, evaluate=not args.no_evaluate,
        device=args.device, progress=not args.no_progress, mlflow=args.mlflow, optuna_storage=args.optuna_storage,
    )
    pick = result.pick
    scores = ", ".join(f"{name} {value:.5g}" for name, value in (("search", pick.search_score), ("confirm", pick.confirm_score), ("test", pick.test_score)) if value is not None)
    print(f"search pick ({pick.origin}): {result.objective} {scores}")
    for group, epochs in pick.epochs.items():
        print(f"  {group}: {epochs[0] if len(epochs) == 1 else epochs}")
    ran = f"{len(result.trials)} trials in"
    if result.earlier_trials:  # the rate is of the trials this run ran, not those before --resume
        ran = f"{len(result.trials)} trials, {result.earlier_trials} before --resume and {result.trials_run} in"
    print(f"{ran} {result.seconds:.1f} s ({result.trials_per_second:.2f}/s); wrote {args.output}/search_report.md")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry("python -m rayjobs.search_crossover", DESCRIPTION, add_arguments, run, argv, EPILOG)


if __name__ == "__main__":
    exit_process(main())
