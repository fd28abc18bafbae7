"""Search quality on landscapes with known truth: policies replayed on exhaustive tables.

    python benchmarks/bench_search_quality.py [--quick] [--seeds 8] [--jobs 2] [--fresh] [--report-only] [--policies P ...]

1. Truth (cached under ``bench_out/search_quality/``): for each training, every single-epoch
   selection of the space is scored once through the Ray-free ``SelectionScorer`` (fed from the
   run directory by ``run.read_group``) on the whole validation split and on test:
   - codec family (``modules/codec``): 3 groups x 30 checkpoints = 27,000 selections per training;
   - demo family (``modules/demo``, 8 groups): the spec's couplings merge them into 4 units
     (backbone+heads, analyzers+dsp_kalman, wrapper_emotion+wrapper_bentham, wrapper_surd+
     wrapper_regret; ``max_epoch_gap: 0``), candidates every 6th epoch: 10^4 selections.
   Runs are copied from ``/work/main/bench_out/auto/runs`` when there (read-only), else trained.
   Averaged selections (the greedy soup of whole checkpoints, module soups) are outside the table:
   they are scored live once, in the cache step, and cached beside it.
2. Replay in process: each trial is a table read. Regret = percent above the exhaustive
   single-epoch optimum on validation of the best single-epoch selection scored so far (what the
   sampler found; the greedy soup's trials still take their share of the budget). A last table
   counts averaged selections too (greedy soup, module soup; negative: an average beat every
   single-epoch selection). Two trials in flight (two workers), told in order. Median and worst
   over trainings x sampler seeds at 50, 100, 150, 300 trials.

Policies: random; TPE (integer params, multivariate, constant liar, 10 startup trials; Optuna
directly, ask/tell); the same TPE univariate ("tpe-indep"); CMA-ES; GP (<= 150 trials, 3 seeds,
the first training of each family: about a second a suggestion); module soup (the project's ``ModuleSoup`` by ask/tell, needs the
baselines; deterministic, so one run per training); the chains ``--algo`` takes: coordinate sweeps
(one pass over the units from the incumbent) then TPE, and the module soup then TPE (the project's
``Chain``, ``CoordinateSweeps``, ``ModuleSoup``, with this file's TPE last). Baselines = every single epoch, then the greedy soup of whole
checkpoints beside the sampler (the project's ``Staged``/``Points``/``Together``/``GreedySoupSearch``):
  none       the sampler alone, every trial its own;
  hist+bud   baselines in the budget, their single epochs told to the sampler (the search today);
  bud        baselines in the budget, the sampler not told;
  hist+free  baselines outside the budget (trials count the sampler's only), told to the sampler.
Single-epoch selections only for the samplers (no averaging windows: not in the exhaustive table).

Time: cold, scoring the four tables takes ~15 min of one core (codec ~70-170 s, demo ~180-300 s each,
two at a time); cached, the replay is ~11 min of CPU (GP about three quarters of it),
so ~6 min on 2 quiet cores (19 min measured at load average 9); ``--quick`` (3 seeds, one training
per family, no GP) ~1 min of CPU, 2 min wall at load average 7. Results go to ``results.jsonl`` as they arrive.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench_out" / "search_quality"
SOURCE_RUNS = Path("/work/main/bench_out/auto/runs")
BUDGETS = (50, 100, 150, 300)
GP_MAX = 150
IN_FLIGHT = 2
TABLE_VERSION = 1
DEMO_UNITS = [
    ("A", ["backbone", "heads"]),
    ("B", ["analyzers", "dsp_kalman"]),
    ("C", ["wrapper_emotion", "wrapper_bentham"]),
    ("D", ["wrapper_surd", "wrapper_regret"]),
]
DEMO_EVERY = 6  # candidate epochs of the demo family: 6, 12, ..., 60
TRAININGS = {"codec": ["codec-0", "codec-1"], "demo": ["demo-0", "demo-1"]}
VARIANTS = ("none", "hist+bud", "bud", "hist+free")


# -- truth: runs, spaces, exhaustive tables ------------------------------------------------------


def ensure_run(name: str) -> Path:
    """The training's run directory in the cache: copied from main's bench_out, else trained."""
    out = CACHE / "runs" / name
    if (out / "manifest.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    family, seed = name.rsplit("-", 1)
    source = SOURCE_RUNS / name
    if (source / "manifest.json").exists():
        shutil.copytree(source, out.with_name(name + ".tmp"), dirs_exist_ok=True)
        out.with_name(name + ".tmp").rename(out)
        return out
    if family == "codec":
        from modules.codec.train import train_codec

        train_codec(out, seed=int(seed), progress=False)
    else:
        from modules.demo.train import train_demo

        train_demo(out, seed=int(seed), width=32, epochs=60, every=2, progress=False)
    return out


def build_space(name: str, run):
    """The crossover space of a training: codec's three groups; the demo's four merged units."""
    import yaml

    from modules.spec.schema import parse_spec
    from search.algorithms.space import CrossoverSpace

    data = yaml.safe_load(run.spec_path().read_text(encoding="utf-8"))
    candidates = None
    if name.startswith("demo"):
        data["couplings"] = [{"name": u, "groups": g, "max_epoch_gap": 0} for u, g in DEMO_UNITS]
        chosen = [e for e in run.epochs if e % DEMO_EVERY == 0]
        candidates = {g: chosen for g in run.groups}
    spec = parse_spec(data, f"{name} spec")
    return spec, CrossoverSpace.build(spec, run.groups, run.epochs, candidates=candidates)


class Truth:
    """A training's exhaustive table and its averaged extras; ``live`` scores what is missing."""

    def __init__(self, name: str) -> None:
        from modules.rundir.run_dir import RunDir

        self.name = name
        self.run = RunDir(ensure_run(name))
        self.spec, self.space = build_space(name, self.run)
        self.folder = CACHE / "tables" / name
        self.shape = tuple(len(u.candidates) for u in self.space.units)
        self.val: np.ndarray | None = None
        self.test: np.ndarray | None = None
        self.extras: dict[str, list[float]] = {}
        self.seconds = 0.0
        self._scorer = None
        self._splits = None

    # the scorer, built only when something must be scored
    def _score(self, epochs) -> tuple[float, float]:
        if self._scorer is None:
            import torch

            from search.scoring.scorer import SelectionScorer

            torch.set_num_threads(1)
            run, spec = self.run, self.spec
            data = spec.load_data()
            batches = spec.batch_iterator() if spec.batches else None
            loaded = {(g, e): run.read_group(e, g) for g in run.groups for e in run.epochs}
            # update_bn and the backbone prefix cache as the search would (the cache changes no score)
            self._scorer = SelectionScorer(
                spec.build_model(), {k: g for g in run.groups for k in run.group_keys(g)},
                lambda g, e: loaded[(g, e)], spec.evaluator(), spec.objective.metric,
                (lambda: batches(data["train"])) if batches else None, batches is not None,
                ["backbone"] if batches else [],
            )
            self._splits = data
        self._scorer.load(epochs)
        metric = self.spec.objective.metric
        return (
            float(self._scorer.score(self._splits["val"], "val")[metric]),
            float(self._scorer.score(self._splits["test"], "test")[metric]),
        )

    def load_or_build(self, fresh: bool = False) -> None:
        table, meta_path, extras = self.folder / "table.npz", self.folder / "meta.json", self.folder / "extras.json"
        if not fresh and table.exists() and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("version") == TABLE_VERSION and tuple(meta["shape"]) == self.shape:
                arrays = np.load(table)
                self.val, self.test = arrays["val"], arrays["test"]
                self.seconds = meta["seconds"]
                self.extras = json.loads(extras.read_text()) if extras.exists() else {}
                return
        started = time.perf_counter()
        val, test = np.empty(self.shape), np.empty(self.shape)
        for index in itertools.product(*(range(n) for n in self.shape)):
            val[index], test[index] = self._score(self.decode(index))
        self.val, self.test = val, test
        self.seconds = time.perf_counter() - started
        self.folder.mkdir(parents=True, exist_ok=True)
        np.savez(self.folder / "table.tmp.npz", val=val, test=test)
        (self.folder / "table.tmp.npz").rename(table)
        meta = {
            "version": TABLE_VERSION, "shape": list(self.shape), "seconds": self.seconds, "run": str(self.run.path),
            "units": [{"name": u.name, "groups": list(u.groups), "candidates": list(u.candidates)} for u in self.space.units],
        }
        meta_path.write_text(json.dumps(meta, indent=1))

    def save_extras(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "extras.tmp.json").write_text(json.dumps(self.extras))
        (self.folder / "extras.tmp.json").rename(self.folder / "extras.json")

    def decode(self, index) -> dict[str, list[int]]:
        return self.space.decode({u.name: int(i) for u, i in zip(self.space.units, index)})

    @property
    def optimum(self) -> float:
        return float(self.val.min())

    def value(self, epochs, live: bool = False) -> float:
        """Validation objective of a selection: a table read, else the extras (scored live when allowed)."""
        params = self.space.encode(epochs)
        if params is not None:
            return float(self.val[tuple(params[u.name] for u in self.space.units)])
        from search.algorithms.space import selection_key

        key = selection_key(epochs)
        if key not in self.extras:
            if not live:
                raise KeyError(f"{self.name}: {key} is not cached; run the benchmark without --report-only to cache it")
            self.extras[key] = list(self._score(epochs))
        return self.extras[key][0]


# -- policies ------------------------------------------------------------------------------------


def make_sampler(kind: str, seed: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=10)
    if kind == "tpe-indep":
        return optuna.samplers.TPESampler(seed=seed, multivariate=False, constant_liar=True, n_startup_trials=10)
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=10, warn_independent_sampling=False)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=10)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(kind)


def _algorithms():
    from search.algorithms.base import Algorithm, Proposal

    class OptunaDirect(Algorithm):
        """An Optuna sampler by ask/tell on a study (no Ray), integer parameter per unit."""

        name = "optuna"

        def __init__(self, space, mode, seed, kind: str, told: bool = True) -> None:
            import optuna

            super().__init__(space, mode, seed)
            self.told = told
            self.study = optuna.create_study(direction="minimize" if mode == "min" else "maximize",
                                             sampler=make_sampler(kind, seed))
            self.distributions = space.distributions()

        def add(self, epochs, value: float) -> None:
            import optuna

            params = self.space.encode(epochs)
            if params is not None:
                self.study.add_trial(optuna.trial.create_trial(params=params, distributions=self.distributions, value=value))

        def warm_start(self, scored) -> None:
            if self.told:
                for item in scored:
                    self.add(item.epochs, item.value)

        def late_result(self, proposal, value: float) -> None:
            if self.told:
                self.add(proposal.epochs, value)

        def ask(self):
            trial = self.study.ask(self.distributions)
            params = {k: int(v) for k, v in trial.params.items()}
            return Proposal(self.space.decode(params), self.name, params, trial)

        def tell(self, proposal, value, state) -> None:
            import optuna

            if state == "complete" and value is not None:
                self.study.tell(proposal.token, value)
            else:
                self.study.tell(proposal.token, state=optuna.trial.TrialState.FAIL)

    return OptunaDirect


def build_policy(truth: Truth, policy: str, variant: str, seed: int):
    """The policy as the search stages it; chains (``sweeps+tpe``) are the project's ``Chain`` with
    this file's direct Optuna TPE as their last member."""
    from search.algorithms import (
        SINGLE,
        Chain,
        CoordinateSweeps,
        GreedySoupSearch,
        ModuleSoup,
        Points,
        Proposal,
        Staged,
        Together,
    )

    OptunaDirect = _algorithms()
    space = truth.space
    told = variant in ("hist+bud", "hist+free")
    first = {"module-soup": ModuleSoup, "sweeps": CoordinateSweeps}
    if policy in first:
        sampler = first[policy](space, "min", seed)
    elif "+" in policy:
        lead, last = policy.split("+")
        sampler = Chain([first[lead](space, "min", seed), OptunaDirect(space, "min", seed, last, told=True)]).bind(space, "min", seed)
    else:
        sampler = OptunaDirect(space, "min", seed, policy, told=told)
    if variant == "none":
        return sampler
    singles = Points(space, "min", seed, [Proposal(space.same_epoch(e), SINGLE) for e in space.units[0].candidates])
    if sampler.follows_soup:
        return Staged(space, "min", seed, [singles, GreedySoupSearch(space, "min", seed), sampler])
    return Staged(space, "min", seed, [singles, Together(space, "min", seed, GreedySoupSearch(space, "min", seed), sampler)])


def drive(truth: Truth, algorithm, trials: int, free: bool, live: bool = False) -> tuple[list[float], list[float]]:
    """Best validation value after each counted trial, among single-epoch selections (table reads)
    and among all (averaged selections too); ``free``: baseline trials are not counted."""
    from search.algorithms import GREEDY, SINGLE

    best = best_single = float("inf")
    curve: list[float] = []
    singles: list[float] = []
    open_: list = []
    while len(curve) < trials:
        while len(open_) < IN_FLIGHT:
            proposal = algorithm.ask()
            if proposal is None:
                break
            open_.append(proposal)
        if not open_:
            break
        proposal = open_.pop(0)
        value = truth.value(proposal.epochs, live=live)
        algorithm.tell(proposal, value, "complete")
        best = min(best, value)
        if truth.space.encode(proposal.epochs) is not None:
            best_single = min(best_single, value)
        if not (free and proposal.origin in (SINGLE, GREEDY)):
            curve.append(best)
            singles.append(best_single)
    pad = trials - len(curve)  # an algorithm that finished keeps its result
    return singles + [best_single] * pad, curve + [best] * pad


def job(args: tuple) -> tuple:
    name, policy, variant, seed, trials = args
    import torch

    torch.set_num_threads(1)
    truth = TRUTHS[name]
    started = time.perf_counter()
    algorithm = build_policy(truth, policy, variant, seed)
    singles, every = drive(truth, algorithm, trials, free=variant == "hist+free")
    regrets = [[100.0 * (v - truth.optimum) / abs(truth.optimum) for v in curve] for curve in (singles, every)]
    return name, policy, variant, seed, regrets, time.perf_counter() - started


TRUTHS: dict[str, Truth] = {}


def _load_truths(names: list[str]) -> None:
    for name in names:
        truth = Truth(name)
        truth.load_or_build(fresh=False)
        TRUTHS[name] = truth


def _cache_one(args: tuple) -> tuple:
    """Build one training's table and score its averaged selections (greedy soup, module soup)."""
    name, fresh = args
    truth = Truth(name)
    started = time.perf_counter()
    truth.load_or_build(fresh=fresh)
    if fresh:
        truth.extras = {}
    for policy in ("module-soup",):  # its trajectory holds the greedy soup's too; seeds change nothing
        drive(truth, build_policy(truth, policy, "hist+bud", 0), max(BUDGETS), free=False, live=True)
    truth.save_extras()
    return name, truth.seconds, time.perf_counter() - started


# -- the plan and the table ------------------------------------------------------------------------


def plan(seeds: int, quick: bool, only: list[str] | None = None) -> list[tuple]:
    trials = max(BUDGETS)
    jobs = []
    policies = ["random", "tpe", "cmaes", "sweeps+tpe", "module-soup+tpe", "tpe-indep"] + (["gp"] if not quick else [])
    if only:
        policies = [p for p in policies if p in only]
    for names in TRAININGS.values():
        for name in names:
            for policy in policies:
                variants = {
                    "random": ("none", "bud"), "tpe-indep": ("none", "hist+bud"),
                    "sweeps+tpe": ("none", "hist+bud", "hist+free"), "module-soup+tpe": ("hist+bud", "hist+free"),
                }.get(policy, VARIANTS)
                if policy == "gp":  # about a second a suggestion: the first training of each family
                    variants = ("none", "hist+bud") if name == names[0] else ()
                n = min(seeds, 3) if policy == "gp" else seeds
                for variant in variants:
                    for seed in range(n):
                        jobs.append((name, policy, variant, seed, GP_MAX if policy == "gp" else trials))
            if not only or "module-soup" in only:
                jobs.append((name, "module-soup", "hist+bud", 0, trials))
    # seed by seed (a stopped run still reports every policy), GP last: it is the slowest by far
    return sorted(jobs, key=lambda j: (j[1] == "gp", j[3], j[1] == "module-soup"))


def _fmt(values: list[float]) -> str:
    if not values:
        return f"{'-':>6} {'-':>6}"
    return f"{statistics.median(values):6.2f} {max(values):6.2f}"


def report(results: list[tuple]) -> None:
    by: dict[tuple, list[list[float]]] = {}
    for name, policy, variant, _seed, (singles, every), _ in results:
        family = name.rsplit("-", 1)[0]
        by.setdefault((family, policy, variant), []).append(singles)
        by.setdefault(("all", policy, variant), []).append(singles)
        by.setdefault(("all, averaged selections counted", policy, variant), []).append(every)
    head = "  ".join(f"{b:>4}: med  worst" for b in BUDGETS)
    order = ["random", "tpe", "tpe-indep", "cmaes", "gp", "sweeps+tpe", "module-soup+tpe", "module-soup"]
    for family in ["codec", "demo", "all", "all, averaged selections counted"]:
        what = "any selection scored" if "averaged" in family else "the best single-epoch selection scored"
        print(f"\n[{family}] regret % of {what} above the exhaustive single-epoch optimum on val"
              " (median, worst over trainings x seeds)")
        print(f"  {'policy':<12} {'baselines':<10} {'runs':>4}   {head}")
        keys = sorted((k for k in by if k[0] == family), key=lambda k: (order.index(k[1]), VARIANTS.index(k[2])))
        for key in keys:
            curves = by[key]
            cells = []
            for budget in BUDGETS:
                at = [c[budget - 1] for c in curves if len(c) >= budget]
                cells.append(_fmt(at))
            print(f"  {key[1]:<12} {key[2]:<10} {len(curves):>4}   " + "  ".join(f"{c:>15}" for c in cells))


def describe(names: list[str]) -> None:
    for name in names:
        truth = TRUTHS[name]
        val, test = truth.val, truth.test
        flat = np.unravel_index(int(val.argmin()), val.shape)
        best = truth.decode(flat)
        singles = [float(val[(i,) * len(val.shape)]) for i in range(val.shape[0])]
        single_best = min(singles)
        soups = [v[0] for v in truth.extras.values()]
        test_of_pick = float(test[flat])
        print(
            f"{name}: {len(truth.space.units)} units x {val.shape[0]} candidates = {val.size} selections;"
            f" optimum val {truth.optimum:.5f} at {json.dumps({u.name: best[u.lead][0] for u in truth.space.units})};"
            f" best single epoch {100 * (single_best - truth.optimum) / truth.optimum:+.2f}%;"
            f" best averaged (soups) {100 * (min(soups) - truth.optimum) / truth.optimum:+.2f}%"
            f" ({len(soups)} scored); test of the val optimum is {100 * (test_of_pick - test.min()) / test.min():.2f}%"
            f" above the test optimum; table scored in {truth.seconds:.0f} s",
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds, one training per family, no GP")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--fresh", action="store_true", help="score the tables again")
    parser.add_argument("--report-only", action="store_true", help="print the table from the last run's results")
    parser.add_argument("--policies", nargs="+", help="replay only these policies (e.g. random tpe sweeps+tpe)")
    args = parser.parse_args()
    results_path = CACHE / ("results-quick.jsonl" if args.quick else "results.jsonl")
    if args.report_only:
        report([tuple(json.loads(line)) for line in results_path.read_text().splitlines() if line.strip()])
        return 0
    started = time.perf_counter()
    names = [n for family in TRAININGS.values() for n in family]
    if args.quick:
        args.seeds = min(args.seeds, 3)
        for family in TRAININGS:
            TRAININGS[family] = TRAININGS[family][:1]
        names = [n for family in TRAININGS.values() for n in family]
    print(f"cache {CACHE}; load average {os.getloadavg()}; {args.jobs} workers", flush=True)
    import multiprocessing as mp

    context = mp.get_context("fork")
    with context.Pool(args.jobs) as pool:
        for name, scored, seconds in pool.imap_unordered(_cache_one, [(n, args.fresh) for n in names]):
            print(f"truth {name}: ready in {seconds:.0f} s (its table took {scored:.0f} s to score)", flush=True)
    _load_truths(names)
    describe(names)
    cached = time.perf_counter()
    jobs = plan(args.seeds, args.quick, args.policies)
    print(f"\nreplaying {len(jobs)} policy runs (single-epoch selections only: averaging windows are not in"
          f" the exhaustive table; soups score averages of whole checkpoints / per unit)", flush=True)
    results = []
    seconds: dict[str, float] = {}
    results_path.unlink(missing_ok=True)
    with context.Pool(args.jobs) as pool, results_path.open("a") as log:  # forked after TRUTHS is loaded
        for done, result in enumerate(pool.imap_unordered(job, jobs), 1):
            results.append(result)
            seconds[result[1]] = seconds.get(result[1], 0.0) + result[5]
            log.write(json.dumps(result) + "\n")
            log.flush()
            if done % 50 == 0:
                print(f"  {done}/{len(jobs)} runs, {time.perf_counter() - cached:.0f} s", flush=True)
    report(results)
    print("\nseconds per policy (all its runs, summed over workers): "
          + ", ".join(f"{k} {v:.0f}" for k, v in sorted(seconds.items())))
    print(f"cache step {cached - started:.0f} s, replay {time.perf_counter() - cached:.0f} s,"
          f" load average at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
