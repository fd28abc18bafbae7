"""Transfer of calibrated thresholds, measured on real demo runs (issue 10).

Train the demo with two seeds (A and B); search and calibrate on A; run auto on B with the
calibrated thresholds; search B as well for its truth. Prints, on A, the groups matched and the
objective gap; on B, the gap between auto's selection and B's search pick next to the gap of the
default thresholds and of the greedy soup (validation = the search part of validation, the basis
every search trial is scored on; test = the held-out test split). Target: calibrated auto on B
within 1% of B's search pick on validation, closer than the defaults, no worse than the greedy
soup on test.

    python benchmarks/bench_calibration.py [WORKDIR] [--width 32 --epochs 40 --num-samples 240 --trials 300]  # ~3-4 min on 2 CPUs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.thresholds import Thresholds  # noqa: E402
from modules.demo.train import train_demo  # noqa: E402
from modules.rundir import RunDir  # noqa: E402
from modules.selection import load_selection  # noqa: E402
from modules.spec import load_spec  # noqa: E402
from search.api import search  # noqa: E402
from search.auto import auto  # noqa: E402
from search.calibrate import calibrate  # noqa: E402
from search.calibration_cases import CalibrationCase, read_search  # noqa: E402

SEEDS = {"A": 0, "B": 1}


def pct(value: float) -> str:
    return f"{100 * value:+.2f}%"


def main(workdir: Path, width: int, epochs: int, every: int, num_samples: int, study_trials: int) -> None:
    started = time.perf_counter()
    runs, searches = {}, {}
    for name, seed in SEEDS.items():
        t = time.perf_counter()
        runs[name] = train_demo(workdir / f"run_{name}", seed=seed, width=width, epochs=epochs, every=every, progress=False)
        print(f"train {name}: demo seed {seed}, width {width}, {epochs} epochs every {every}: {time.perf_counter() - t:.1f} s")
    for name, run in runs.items():
        t = time.perf_counter()
        searches[name] = workdir / f"search_{name}"
        search(run, searches[name], trust_run_spec=True, num_samples=num_samples, algo="tpe", progress=False, evaluate=False)
        print(f"search {name}: {num_samples} trials (tpe, baselines first): {time.perf_counter() - t:.1f} s")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = calibrate([runs["A"]], [searches["A"]], workdir / "calibrated" / "thresholds.json",
                           trust_run_spec=True, trials=study_trials, seed=0)
    calibrated, default = result.calibrated[0], result.defaults[0]
    n_groups = len(result.search_picks[0])
    print(
        f"calibrate on A: {len(result.history)} study trials in {result.study_seconds:.1f} s"
        f" ({1000 * result.study_seconds / len(result.history):.1f} ms each); reproduced: {result.reproduced}"
    )
    print(
        f"A: groups matched {n_groups - len(calibrated.mismatched)}/{n_groups} calibrated,"
        f" {n_groups - len(default.mismatched)}/{n_groups} defaults; val gap to A's search pick:"
        f" calibrated {pct(calibrated.val_gap)}, defaults {pct(default.val_gap)};"
        f" test gap: calibrated {pct(calibrated.test_gap)}, defaults {pct(default.test_gap)}"
    )

    t = time.perf_counter()
    done = auto([runs["B"]], workdir / "calibrated" / "thresholds.json", workdir / "auto", trust_run_spec=True, progress=False)
    (outcome,) = done.runs
    print(f"auto on B: {outcome.status} in {time.perf_counter() - t:.1f} s")

    run_b = RunDir(runs["B"])
    case = CalibrationCase(run_b, read_search(searches["B"]), load_spec(run_b.spec_path()))
    recorded = run_b.epochs
    selection = load_selection(workdir / "auto" / run_b.path.name / "analysis" / "selection.json")
    auto_epochs = {g: selection.epochs_for(g, recorded) for g in run_b.groups}
    default_epochs = case.selection_of(case.analyse(Thresholds()))
    soup = case.search.baselines.get("greedy soup")
    rows = {"calibrated auto": auto_epochs, "default thresholds": default_epochs}
    if soup is not None:
        rows["greedy soup"] = {g: list(v) for g, v in soup["epochs"].items()}
    figures = {}
    for label, epochs in rows.items():
        val, test = case.val_score(epochs), case.test_score(epochs)
        figures[label] = (case.gap(val), case.test_gap(test), test)
        matched = n_groups - len(case.mismatches(epochs))
        print(
            f"B: {label}: val gap to B's search pick {pct(case.gap(val))}, test gap {pct(case.test_gap(test))}"
            f" (test loss {test:.5g}); groups matching B's pick {matched}/{n_groups}"
        )
    pick_test = case.test_score(case.search.pick)
    print(f"B: search pick: val {case.search.pick_search:.5g}, test {pick_test:.5g}")
    auto_gap, _, auto_test = figures["calibrated auto"]
    default_gap = figures["default thresholds"][0]
    soup_test = figures["greedy soup"][2] if "greedy soup" in figures else float("nan")
    print(
        "target: within 1% on val: " + ("met" if auto_gap <= 0.01 else f"missed by {pct(auto_gap - 0.01)}")
        + "; closer than defaults: " + ("met" if auto_gap <= default_gap else f"missed by {pct(auto_gap - default_gap)}")
        + "; no worse than greedy soup on test: "
        + ("met" if auto_test <= soup_test else f"missed by {pct((auto_test - soup_test) / abs(soup_test))}")
    )
    print(f"selections: auto {json.dumps(auto_epochs)}; B's search pick {json.dumps(case.search.pick)}")
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Transfer of calibrated thresholds between two demo runs.")
    parser.add_argument("workdir", nargs="?", help="keep the runs and outputs here (default: a temporary folder)")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--num-samples", type=int, default=240, help="trials of each search")
    parser.add_argument("--trials", type=int, default=300, help="trials of the calibration study")
    args = parser.parse_args()
    sizes = (args.width, args.epochs, args.every, args.num_samples, args.trials)
    if args.workdir:
        main(Path(args.workdir), *sizes)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-calibration-") as tmp:
            main(Path(tmp), *sizes)
