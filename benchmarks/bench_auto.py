"""Does the automatic path carry a search's gains to a training nobody searched? (issue 15)

Two trainings (seeds 0 and 1) of each of two model families with different group structures: the
demo (8 groups, couplings) and the codec (encoder, classifier, decoder; ``modules/codec``). Each
training is searched in full (``--num-samples``, averaging windows included). Then, per family,
calibrate on one training and ``auto --calibration --evaluate`` the other, and the reverse.
Printed per pair:

- fitted: auto on the calibrated run itself, val gap to its search pick (search part of validation);
- transfer: auto's val gap to the target run's own full search (both scored on the whole
  validation split), test against the target's greedy soup (percent, positive = better) with the
  95% paired-bootstrap interval of the per-example test difference, evaluations spent against the
  search's trials;
- calibration time against the time of the search it calibrates to.

    python benchmarks/bench_auto.py [WORKDIR] [--num-samples 200] [--trials 100] [--families demo codec]

Runs and searches are kept in WORKDIR (default bench_out/auto) and reused on a rerun; delete the
folder to start again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.evaluation.evaluate import CandidateEvaluator  # noqa: E402
from modules.codec.train import train_codec  # noqa: E402
from modules.demo.train import train_demo  # noqa: E402
from modules.rundir.run_dir import RunDir  # noqa: E402
from modules.spec.schema import load_spec  # noqa: E402
from search.calibration.auto import auto  # noqa: E402
from search.calibration.calibrate import calibrate  # noqa: E402
from search.execution.api import search  # noqa: E402
from search.execution.config import SearchConfig  # noqa: E402

TRAIN = {
    "demo": lambda out, seed: train_demo(out, seed=seed, width=32, epochs=60, every=2, progress=False, reuse=True),
    "codec": lambda out, seed: train_codec(out, seed=seed, progress=False, reuse=True),
}


def pct(value: float) -> str:
    return f"{100 * value:+.2f}%"


def searched(run: Path, out: Path, samples: int) -> tuple[Path, float]:
    summary = out / "search_summary.json"
    if not summary.is_file():
        config = SearchConfig(num_samples=samples, include_averages=True)
        search(run, out, trust_run_spec=True, config=config, progress=False)
    return out, float(json.loads(summary.read_text())["seconds"])


def whole_val(run: Path, epochs: dict[str, list[int]]) -> float:
    rundir = RunDir(run)
    evaluator = CandidateEvaluator(load_spec(rundir.spec_path()), rundir)
    averaged = any(len(v) > 1 for v in epochs.values())
    return evaluator.val_objective(epochs, evaluator.has_bn and evaluator.batches is not None and averaged)


def pair(family: str, source: Path, target: Path, searches: dict[Path, tuple[Path, float]], workdir: Path, trials: int) -> dict:
    name = f"{family} {source.name}->{target.name}"
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calibrated = calibrate([source], [searches[source][0]], workdir / "cal" / name.replace(" ", "_") / "thresholds.json",
                               trust_run_spec=True, trials=trials)
    calibration_seconds = time.perf_counter() - t
    fitted = calibrated.transfer[0]
    done = auto([target], None, workdir / "auto" / name.replace(" ", "_"), trust_run_spec=True, evaluate=True,
                calibration=calibrated.written["calibration"], progress=False, redo=True)
    outcome = done.runs[0]
    if outcome.status != "done":
        raise SystemExit(f"{name}: auto failed: {outcome.error}")
    record = outcome.record
    summary = json.loads((searches[target][0] / "search_summary.json").read_text())
    pick = {g: [int(e) for e in v] for g, v in summary["pick"]["epochs"].items()}
    search_val = whole_val(target, pick)
    trials_run = int(summary.get("trials", 0))
    gap = (record["val"] - search_val) / abs(search_val)
    soup = record["greedy_soup"]
    low, high = soup["test_difference"]
    print(
        f"{name}: fitted: auto val gap to its search pick {pct(fitted.val_gap)} ({fitted.evaluations} evaluations);"
        f" transfer: val {record['val']:.5g} vs target's full search {search_val:.5g} -> gap {pct(gap)};"
        f" test vs greedy soup {soup['test_gain_pct']:+.2f}% [{low:+.4g}, {high:+.4g}] ({soup['verdict']});"
        f" evaluations {record['budget']['evaluations']} of {record['budget']['budget']} vs search {trials_run} trials;"
        f" calibration {calibration_seconds:.1f} s vs search {searches[source][1]:.1f} s;"
        f" kept: {record['guard']['chosen']}",
        flush=True,
    )
    return {"fitted_gap": fitted.val_gap, "gap": gap, "soup_gain": soup["test_gain_pct"], "soup_low": low, "soup_high": high,
            "evaluations": record["budget"]["evaluations"], "calibration_s": calibration_seconds, "search_s": searches[source][1]}


def main(workdir: Path, samples: int, trials: int, families: list[str]) -> None:
    started = time.perf_counter()
    rows = []
    for family in families:
        runs = [TRAIN[family](workdir / "runs" / f"{family}-{seed}", seed) for seed in (0, 1)]
        searches = {run: searched(run, workdir / "search" / run.name, samples) for run in runs}
        for source, target in ((runs[0], runs[1]), (runs[1], runs[0])):
            rows.append(pair(family, source, target, searches, workdir, trials))
    fitted_ok = sum(r["fitted_gap"] <= 0.005 for r in rows)
    transfer_ok = sum(r["gap"] <= 0.01 for r in rows)
    soup_ok = sum(r["soup_high"] < 0 for r in rows)
    faster = sum(r["calibration_s"] < r["search_s"] for r in rows)
    print(
        f"targets over {len(rows)} pairs: fitted within 0.5% {fitted_ok}/{len(rows)}; transfer within 1% of the"
        f" target's own search {transfer_ok}/{len(rows)}; better than the greedy soup on test (interval below 0)"
        f" {soup_ok}/{len(rows)}; within 3 evaluations per checkpoint {sum(r['evaluations'] <= 90 for r in rows)}/{len(rows)};"
        f" calibration faster than the search {faster}/{len(rows)}; total {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", nargs="?", default="bench_out/auto")
    parser.add_argument("--num-samples", type=int, default=200, help="trials of each full search")
    parser.add_argument("--trials", type=int, default=100, help="trials of the threshold study in each calibration")
    parser.add_argument("--families", nargs="+", default=["codec", "demo"], choices=sorted(TRAIN))
    args = parser.parse_args()
    main(Path(args.workdir), args.num_samples, args.trials, args.families)
