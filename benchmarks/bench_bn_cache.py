"""Benchmark the scorer's BatchNorm cache: the selections a real TPE search with averaging windows
tried on the demo, replayed in the same order through one scorer that keeps recomputed BatchNorm
statistics per choice (ours) and one that recomputes them over the train split every time (the
naive way, what ``combine --update-bn`` does for one model). Same model, data and selections;
the scores must be identical.

    python benchmarks/bench_bn_cache.py [--run RUN] [--num-samples 200]

Without ``--run`` the demo (width 64, 60 epochs) is trained into a temporary folder, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def replay(run, spec, data, selections: list[dict[str, list[int]]], bn_cache_bytes: int) -> tuple[float, list[float], dict]:
    from search.scoring.scorer import SelectionScorer

    key_groups = {k: g for g in run.groups for k in run.group_keys(g)}
    groups = {(g, e): run.read_group(e, g) for g in run.groups for e in run.epochs}  # both sides read nothing
    batches = spec.batch_iterator()
    scorer = SelectionScorer(
        spec.build_model(), key_groups, lambda g, e: groups[(g, e)], spec.evaluator(), spec.objective.metric,
        lambda: batches(data["train"]), True, bn_cache_bytes=bn_cache_bytes,
    )
    started = time.perf_counter()
    scores = []
    for epochs in selections:
        scorer.load(epochs)
        scores.append(scorer.score(data["val"], "val")[spec.objective.metric])
    return time.perf_counter() - started, scores, scorer.stats.snapshot()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a demo run directory (default: train one)")
    parser.add_argument("--num-samples", type=int, default=200)
    args = parser.parse_args()
    import pandas as pd
    import ray

    import sweetspot
    from modules.demo.train import train_demo
    from modules.rundir.run_dir import RunDir
    from modules.rundir.run_spec import spec_for_run

    root = Path(tempfile.mkdtemp(prefix="bench-bn-"))
    try:
        run_path = Path(args.run) if args.run else train_demo(root / "run", progress=False)
        run = RunDir(run_path)
        spec, _ = spec_for_run(None, run, trust_run_spec=True)
        sweetspot.search(run, root / "search", spec, num_samples=args.num_samples, include_averages=True,
                         evaluate=False, progress=False)
        ray.shutdown()
        trials = pd.read_parquet(root / "search" / "trials.parquet")
        trials = trials[trials["status"] == "finished"]
        selections = [{g: json.loads(row[f"choice/{g}"]) for g in run.groups} for _, row in trials.iterrows()]
        averaged = sum(any(len(v) > 1 for v in s.values()) for s in selections)
        data = spec.load_data()
        naive_s, naive_scores, naive_stats = replay(run, spec, data, selections, bn_cache_bytes=0)
        ours_s, our_scores, our_stats = replay(run, spec, data, selections, bn_cache_bytes=256 << 20)
        print(f"{len(selections)} selections of a {args.num_samples}-trial TPE search with averaging windows"
              f" ({averaged} with an averaged group), replayed through one scorer, whole validation split")
        print(f"naive (recompute every time): {naive_s:.1f} s, {naive_stats['bn_recomputes']} BatchNorm passes"
              f" over the train split; {len(selections) / naive_s:.2f} selections/s")
        print(f"ours (statistics kept per choice): {ours_s:.1f} s, {our_stats['bn_recomputes']} passes,"
              f" {our_stats['bn_hits']} reused; {len(selections) / ours_s:.2f} selections/s")
        print(f"speed-up {naive_s / ours_s:.2f}x; scores identical: {naive_scores == our_scores}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
