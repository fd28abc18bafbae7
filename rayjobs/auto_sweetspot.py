"""``sweetspot auto``: automatic sweet-spot runs with calibrated thresholds, one Ray task per run (seed phase 4.3).

    sweetspot auto --checkpoint-dir RUN [RUN ...] --calibration calibration.json --output auto_results/
    sweetspot auto --checkpoint-dir RUN [RUN ...] --thresholds calibrated_thresholds.json --output auto_results/
    python -m rayjobs.auto_sweetspot --calibration calibration.json ...   (the same, for ray job submit)

Exit status: 0 when every run completed (or was complete already), 1 when some run failed (the
others still ran), 2 when nothing could start.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import sweetspot
from rayjobs._entry import exit_process, run_entry

DESCRIPTION = (
    "For each run: select (with a calibration: refine on the run's validation split within a counted budget;"
    " with thresholds: the analysis's pick), combine, and with --evaluate evaluate against the baselines; runs"
    " are independent Ray tasks, so many go in parallel on a cluster."
)
EPILOG = """examples:
  sweetspot auto --checkpoint-dir runs/b runs/c --calibration calibration.json --trust-run-spec --output auto/
  ray job submit --working-dir . -- python -m rayjobs.auto_sweetspot --address auto --evaluate \\
      --checkpoint-dir /shared/runs/* --thresholds calibrated_thresholds.json --spec sweetspot.yaml \\
      --gpus-per-run 1 --output /shared/auto/

Each run writes into OUTPUT/<run name>/ (analysis/, combined.safetensors, evaluation/, auto_result.json);
a failed run is reported in auto_summary.md and does not stop the others; a rerun skips complete runs."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint-dir", required=True, nargs="+", metavar="RUN", help="run directories")
    parser.add_argument(
        "--calibration", metavar="JSON",
        help="calibration.json from sweetspot calibrate: each run's selection is refined on its validation split within"
        " a counted budget, never worse there than its greedy soup",
    )
    parser.add_argument(
        "--evaluations-per-checkpoint", type=float, default=3.0, metavar="N",
        help="with --calibration: evaluations per run, per checkpoint, the greedy soup included (default 3, at least 1)",
    )
    parser.add_argument("--thresholds", metavar="JSON", help="thresholds file (default: the calibration's)")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for a subfolder per run and auto_summary.md/.parquet")
    parser.add_argument("--spec", metavar="YAML", help="your sweetspot.yaml, for every run")
    parser.add_argument("--trust-run-spec", action="store_true", help="run each run's stored spec (only for runs you trust)")
    parser.add_argument("--evaluate", action="store_true", help="evaluate each combination against the baselines (val and test)")
    parser.add_argument("--update-bn", action="store_true", help="recompute stale BatchNorm statistics when combining")
    parser.add_argument(
        "--guard", action="store_true",
        help="keep, per run, the best on its validation split of the thresholds' pick, the default thresholds' pick and"
        " its greedy soup (costs a validation pass per checkpoint)",
    )
    parser.add_argument("--address", help="Ray cluster to join (auto, or ray://host:10001); default: start a local Ray")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs each run's task takes (default 1)")
    parser.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs each run's task takes (default 0)")
    parser.add_argument("--plots", action="store_true", help="also write each analysis's visualizations/")
    parser.add_argument("--redo", action="store_true", help="redo runs whose outputs are complete")
    parser.add_argument("--no-progress", action="store_true", help="no line per finished run")
    parser.add_argument("--mlflow", metavar="URI", help="log to MLflow: a parent run, a child run per run, the reports as artifacts (a tracking URI or a folder)")


def run(args: argparse.Namespace) -> int:
    result = sweetspot.auto(
        args.checkpoint_dir, args.thresholds, args.output, args.spec, trust_run_spec=args.trust_run_spec,
        evaluate=args.evaluate, update_bn=args.update_bn, address=args.address, cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run, plots=args.plots, redo=args.redo, progress=not args.no_progress,
        guard=args.guard, calibration=args.calibration, evaluations_per_checkpoint=args.evaluations_per_checkpoint,
        mlflow=args.mlflow,
    )
    counts = {s: sum(r.status == s for r in result.runs) for s in ("done", "skipped", "failed")}
    print(
        f"{len(result.runs)} run(s): {counts['done']} done, {counts['skipped']} skipped (complete),"
        f" {counts['failed']} failed; wrote {result.written['report']}"
    )
    for failed in result.failed:
        print(f"error: run {failed.run} failed: {failed.error}", file=sys.stderr)
    return 1 if result.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry("python -m rayjobs.auto_sweetspot", DESCRIPTION, add_arguments, run, argv, EPILOG)


if __name__ == "__main__":
    exit_process(main())
