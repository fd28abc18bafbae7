"""The sampler settings benchmarks/bench_search_quality.py recommends beat random search on a planted
landscape with known truth (in process, no Ray; the optimum is found by brute force here)."""

from __future__ import annotations

import itertools
import statistics
import warnings

import optuna
import pytest

GROUPS = ("encoder", "classifier", "decoder")
EPOCHS = list(range(2, 42, 2))  # 20 recorded epochs per group
CENTRES = {"encoder": 28, "classifier": 14, "decoder": 34}
WIDTHS = {"encoder": 6.0, "classifier": 10.0, "decoder": 8.0}
BUDGET = 60
SEEDS = range(6)
IN_FLIGHT = 2  # two workers: constant liar sees a pending trial


def loss(epochs: dict[str, int]) -> float:
    """Per-group bowls, an encoder-decoder interaction (they prefer to be close) and a ripple."""
    total = 1.0
    for group in GROUPS:
        total += ((epochs[group] - CENTRES[group]) / WIDTHS[group]) ** 2 * 0.05
    total += 0.0004 * (epochs["encoder"] - epochs["decoder"]) ** 2
    total += 0.002 * ((epochs["classifier"] // 2) % 3 == 2)
    return total


def optimum() -> float:
    return min(loss(dict(zip(GROUPS, combo))) for combo in itertools.product(EPOCHS, repeat=len(GROUPS)))


def recommended(seed: int) -> optuna.samplers.BaseSampler:
    """The benchmark's choice: TPE over integer indices, multivariate, constant liar."""
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=10)


def best_after(sampler: optuna.samplers.BaseSampler, budget: int) -> float:
    """Ask/tell with two trials in flight; the best loss seen over ``budget`` trials."""
    distributions = {g: optuna.distributions.IntDistribution(0, len(EPOCHS) - 1) for g in GROUPS}
    study = optuna.create_study(direction="minimize", sampler=sampler)
    pending, best, told = [], float("inf"), 0
    while told < budget:
        while len(pending) < IN_FLIGHT and told + len(pending) < budget:
            pending.append(study.ask(distributions))
        trial = pending.pop(0)
        value = loss({g: EPOCHS[trial.params[g]] for g in GROUPS})
        study.tell(trial, value)
        best, told = min(best, value), told + 1
    return best


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)


def test_planted_landscape_has_the_planted_optimum() -> None:
    # The interaction pulls encoder and decoder together a little; the classifier's ripple is tiny.
    best = min(itertools.product(EPOCHS, repeat=3), key=lambda c: loss(dict(zip(GROUPS, c))))
    assert best[1] == 14 and 28 <= best[0] <= best[2] <= 34


def test_recommended_sampler_beats_random_search_median_regret_at_the_same_budget() -> None:
    truth = optimum()
    regret = {
        name: [100 * (best_after(make(seed), BUDGET) - truth) / truth for seed in SEEDS]
        for name, make in (("recommended", recommended), ("random", lambda s: optuna.samplers.RandomSampler(seed=s)))
    }
    ours, rnd = statistics.median(regret["recommended"]), statistics.median(regret["random"])
    assert ours < rnd / 2, regret
