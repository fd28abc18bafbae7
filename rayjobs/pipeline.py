"""``sweetspot pipeline``: every step on one run, auto on new runs, one summary.

    sweetspot pipeline --checkpoint-dir RUN_A --auto-runs RUN_B --output runs/ (--spec sweetspot.yaml | --trust-run-spec)
    sweetspot pipeline --checkpoint-dir RUN_1 RUN_2 ... --thresholds thresholds.json --output out/
    python -m rayjobs.pipeline ...   (the same, for ray job submit)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import sweetspot
from rayjobs._entry import exit_process, run_entry
from rayjobs.options import (
    add_progress_flag,
    add_search_settings,
    add_trust_flag,
    add_trust_resume_flag,
    config_from,
)

DESCRIPTION = (
    "The whole chain: analyse, combine, search and calibrate on one run, auto on the new runs with"
    " the calibrated thresholds, then evaluate every pick on test and write summary.md; or, with"
    " --thresholds, analyse and auto-select many runs. Complete stages are skipped on a rerun."
)
EPILOG = """examples:
  sweetspot pipeline --checkpoint-dir runs/a --auto-runs runs/b --spec sweetspot.yaml --output results/
  sweetspot pipeline --checkpoint-dir runs/r1 runs/r2 runs/r3 --thresholds results/calibration/thresholds.json \\
      --spec sweetspot.yaml --output auto_results/
  ray job submit --working-dir . -- python -m rayjobs.pipeline --checkpoint-dir /shared/runs/a \\
      --auto-runs /shared/runs/b --spec sweetspot.yaml --gpus-per-trial 0.25 --output /shared/results/

The output holds analysis/, combined/, search/, calibration/, auto/ and evaluation/ (a folder per run
each) and summary.md / summary.json / summary.png. --force redoes every stage."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint-dir", required=True, nargs="+", metavar="RUN", help="the run to search (one), or with --thresholds the runs to auto-select")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for every stage's outputs and summary.md")
    parser.add_argument("--spec", metavar="YAML", help="your sweetspot.yaml, used for every run (it names code the steps run)")
    add_trust_flag(parser, "each run")
    parser.add_argument("--auto-runs", nargs="+", default=[], metavar="RUN", help="new runs that get the calibrated thresholds (auto)")
    parser.add_argument("--thresholds", metavar="JSON", help="calibrated thresholds.json: skip search and calibration, auto every run")
    parser.add_argument("--calibration-trials", type=int, default=300, help="Optuna trials of the calibration (default 300)")
    add_search_settings(parser)
    parser.add_argument("--address", help="Ray cluster to join (auto, or ray://host:10001); default: start a local Ray")
    parser.add_argument("--device", default="cpu", help="device of the evaluate steps (default cpu)")
    parser.add_argument("--force", action="store_true", help="redo every stage, complete or not")
    add_trust_resume_flag(parser)
    add_progress_flag(parser)
    parser.add_argument("--mlflow", metavar="URI", help="log to MLflow: a pipeline run with its search and auto runs nested in it (a tracking URI or a folder)")


def run(args: argparse.Namespace) -> int:
    result = sweetspot.pipeline(
        args.checkpoint_dir, args.output, args.spec, auto_runs=args.auto_runs, thresholds=args.thresholds,
        trust_run_spec=args.trust_run_spec, config=config_from(args), calibration_trials=args.calibration_trials,
        address=args.address, device=args.device, force=args.force, progress=not args.no_progress, mlflow=args.mlflow,
        trust_resume=args.trust_resume,
    )
    print((result.output / "summary.md").read_text(encoding="utf-8"))
    done = sum(s.status == "done" for s in result.stages)
    print(f"{done} stage(s) run, {len(result.stages) - done} complete from before; wrote {result.written['md']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry("python -m rayjobs.pipeline", DESCRIPTION, add_arguments, run, argv, EPILOG)


if __name__ == "__main__":
    exit_process(main())
