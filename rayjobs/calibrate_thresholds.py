"""``sweetspot calibrate``: fit the analysis's thresholds so it reproduces the search's pick (seed phase 4.2).

    sweetspot calibrate --checkpoint-dir RUN [RUN ...] --search SEARCH [SEARCH ...] --output calibrated_thresholds.json
    python -m rayjobs.calibrate_thresholds ...   (the same, for ray job submit)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import sweetspot
from rayjobs._entry import exit_process, run_entry

DESCRIPTION = (
    "Fit the analysis's five thresholds with an Optuna study so that it selects what `sweetspot search`"
    " found best; write them (thresholds.json form) with calibration_report.md beside them."
)
EPILOG = """examples:
  sweetspot calibrate --checkpoint-dir runs/a --search search_a/ --trust-run-spec --output calibrated_thresholds.json
  sweetspot calibrate --checkpoint-dir runs/a runs/b --search search_a/ search_b/ --spec sweetspot.yaml \\
      --trials 500 --output calibrated_thresholds.json
  sweetspot auto --checkpoint-dir runs/c --thresholds calibrated_thresholds.json --trust-run-spec --output auto/

Several runs (each with the search of it, in the same order) are fitted jointly: the mean gap. The study
analyses recorded metrics only, so hundreds of trials take seconds; selections the search did not score
are scored once on the search's part of validation (this runs the spec's code)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint-dir", required=True, nargs="+", metavar="RUN", help="run directories")
    parser.add_argument("--search", required=True, nargs="+", metavar="SEARCH", help="the search folder of each run, same order")
    parser.add_argument("--output", required=True, metavar="JSON", help="calibrated thresholds file; the report goes beside it")
    parser.add_argument("--spec", nargs="+", metavar="YAML", help="your sweetspot.yaml: one for all runs, or one per run")
    parser.add_argument("--trust-run-spec", action="store_true", help="run each run's stored spec (only for runs you trust)")
    parser.add_argument("--trials", type=int, default=300, help="study trials, the defaults included (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the study's sampler (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the study's progress bar")
    parser.add_argument("--optuna-storage", metavar="URL", help="keep the study there (e.g. sqlite:///search.db) as sweetspot-calibrate-<id>, for optuna-dashboard")


def run(args: argparse.Namespace) -> int:
    spec = args.spec[0] if args.spec and len(args.spec) == 1 else args.spec
    result = sweetspot.calibrate(
        args.checkpoint_dir, args.search, args.output, spec, trust_run_spec=args.trust_run_spec,
        trials=args.trials, seed=args.seed, progress=not args.no_progress, optuna_storage=args.optuna_storage,
    )
    n_groups = sum(len(p) for p in result.search_picks)
    matched = n_groups - sum(len(o.mismatched) for o in result.calibrated)
    verdict = "reproduces the search's pick" if result.reproduced else "does not reproduce the search's pick"
    print(
        f"calibrated thresholds {verdict}: {matched} of {n_groups} group choices match, mean validation gap"
        f" {100 * result.mean_val_gap:+.3f}% ({len(result.history)} trials in {result.study_seconds:.1f} s)"
    )
    print(f"wrote {args.output} and {result.written.get('report')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry("python -m rayjobs.calibrate_thresholds", DESCRIPTION, add_arguments, run, argv, EPILOG)


if __name__ == "__main__":
    exit_process(main())
