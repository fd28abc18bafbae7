"""Evaluate candidates on train/val/test with the spec's evaluate callable; compare with bootstrap."""

from __future__ import annotations

import contextlib
import json
import math
import os
import traceback
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from analysis.evaluation.baselines import (
    AnalysisInfo,
    Candidate,
    averaged_candidates,
    deduplicate,
    single_epoch_candidates,
)
from analysis.evaluation.bootstrap import PairedInterval, paired_bootstrap
from modules.combine.batchnorm import has_batchnorm, recompute_batchnorm, update_bn
from modules.combine.model_fit import (
    FIT_FIX,
    describe_spec_model,
    load_file_into_model,
    load_into_model,
)
from modules.combine.plan import plan_from_run
from modules.combine.soups import EpochSet, GreedySoup, greedy_soup, same_epochs
from modules.combine.sources import iter_plan
from modules.devices import resolve_device
from modules.errors import EvaluationError, UserCodeError, one_line
from modules.rundir.digest import digest, run_key
from modules.rundir.run_dir import RunDir
from modules.scalars import as_scalar
from modules.spec.schema import dump_spec, is_better, loss_sign
from modules.spec.selection import Selection, choice_for_epochs, selection_key

SPLITS = ("train", "val", "test")
LOSSES_KEY = "per_example_losses"


@dataclass
class Evaluated:
    """A candidate's scalar metrics per split and its per-example test losses."""

    candidate: Candidate
    metrics: dict[str, dict[str, float]]
    test_losses: np.ndarray

    def objective(self, split: str, metric: str) -> float:
        return self.metrics[split][metric]


@dataclass
class Comparison:
    """Combination minus one baseline: percent differences and the test bootstrap interval."""

    baseline: str
    percent: dict[str, dict[str, float]]
    test_interval: PairedInterval
    verdict: str


@dataclass
class EvaluationResult:
    """Everything the report shows."""

    objective_metric: str
    objective_mode: str
    evaluated: list[Evaluated]
    comparisons: list[Comparison]
    greedy: GreedySoup | None
    notes: list[str] = field(default_factory=list)
    #: The per-example values the intervals are over (lower is better), e.g. per_example_losses.
    per_example_name: str = LOSSES_KEY
    #: The greedy soup as a selection `sweetspot combine --selection` builds (greedy_selection.json).
    greedy_selection: dict[str, Any] | None = None


@dataclass
class EvaluationMemo:
    """What an evaluator has scored, by weights: every candidate's metrics on each split, and the
    validation scores alone of the greedy soup's steps."""

    evaluated: dict[str, Evaluated] = field(default_factory=dict)
    #: Metrics on the validation split (the intervals are over the test split's per-example values).
    val: dict[str, dict[str, float]] = field(default_factory=dict)
    #: What the per-example values the bootstrap compares are (lower is better).
    per_example_name: str = LOSSES_KEY


Memos = dict[tuple[str, str, str], EvaluationMemo]
_SHARED_MEMOS: ContextVar[Memos | None] = ContextVar("sweetspot_evaluation_memos", default=None)


@contextlib.contextmanager
def evaluating_once() -> Iterator[Memos]:
    """Within the block, evaluators of the same run, spec and device share their memo: a candidate
    is scored once however many steps ask for it (a pipeline's search scores its pick against the
    baselines, its guard and its evaluate step the greedy soup: each checkpoint and soup of a big
    model is minutes). The run, the spec's code and its data must not change within the block. A
    block inside another shares the outer one's. Yields the memos (run, spec and device -> memo)."""
    outer = _SHARED_MEMOS.get()
    if outer is not None:
        yield outer
        return
    memos: Memos = {}
    token = _SHARED_MEMOS.set(memos)
    try:
        yield memos
    finally:
        _SHARED_MEMOS.reset(token)


def validation_scores(memos: Memos) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The validation scores in ``memos``, small enough to send from the process that scored them
    (a Ray task) to the one that evaluates next (``add_validation_scores``)."""
    return {key: {"val": dict(memo.val), "per_example_name": memo.per_example_name} for key, memo in memos.items() if memo.val}


def add_validation_scores(scores: Mapping[tuple[str, str, str], Mapping[str, Any]]) -> None:
    """Inside ``evaluating_once``: take validation scores another process computed for the same
    run, spec and device (outside it, nothing is kept)."""
    shared = _SHARED_MEMOS.get()
    if shared is None:
        return
    for key, got in scores.items():
        memo = shared.setdefault(tuple(key), EvaluationMemo())
        for weights, metrics in got["val"].items():
            memo.val.setdefault(weights, metrics)
        memo.per_example_name = got["per_example_name"]


def _memo_for(spec: Any, run: RunDir, device: torch.device) -> EvaluationMemo:
    shared = _SHARED_MEMOS.get()
    if shared is None:
        return EvaluationMemo()
    return shared.setdefault((run_key(run), digest(dump_spec(spec)), str(device)), EvaluationMemo())


def _as_array(values: Any) -> np.ndarray:
    return np.asarray(torch.as_tensor(values).detach().cpu().double()).reshape(-1)


class CandidateEvaluator:
    """Holds one model instance and the data; loads each candidate into it and evaluates it.

    ``splits`` are the data to score on, by default ``spec.load_data()``'s; pass ``splits_are_specs``
    when they are that too (loaded once by the caller), so that inside ``evaluating_once`` the
    evaluator shares its memo with the others of this run, spec and device."""

    def __init__(
        self,
        spec: Any,
        run: RunDir,
        splits: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        model_desc: str | None = None,
        splits_are_specs: bool = False,
    ) -> None:
        self.spec, self.run = spec, run
        device = resolve_device(device) if isinstance(device, str) else torch.device(device)  # "auto" too
        self.memo = _memo_for(spec, run, device) if splits is None or splits_are_specs else EvaluationMemo()
        #: How errors name the model weights must fit, e.g. "the model of spec 'demo' (sweetspot.yaml: ...)".
        self.model_desc = model_desc or describe_spec_model(spec)
        self.splits = splits if splits is not None else spec.load_data()
        self.evaluate_fn = spec.evaluator()
        # One model instance for every candidate: weights are copied into it (CPU -> device).
        self.model = spec.build_model().to(device)
        self.metric = spec.objective.metric
        self.mode = spec.objective.mode
        self.notes: list[str] = []
        self.has_bn = has_batchnorm(self.model)
        self.loaded = "no weights loaded yet"
        self.batches = None
        if self.has_bn:
            if spec.batches is None:
                self.notes.append("the model has BatchNorm but the spec has no batches callable: averages are scored without the BatchNorm recompute")
            else:
                self.batches = spec.batch_iterator()

    @property
    def per_example_name(self) -> str:
        """What the per-example values the bootstrap compares are (lower is better)."""
        return self.memo.per_example_name

    def load(self, candidate: Candidate) -> None:
        """Put the candidate's weights (and recomputed BatchNorm statistics) into the model."""
        recompute = candidate.recompute_bn and self.batches is not None
        #: The weights in the model, as an error names them.
        self.loaded = (
            f"the model file {candidate.model_path}" if candidate.model_path is not None
            else f"the epochs {selection_key(candidate.epochs or {})} of run {self.run.label}"
        )
        if candidate.model_path is not None:
            load_file_into_model(candidate.model_path, self.model, self.model_desc, FIT_FIX)
            if recompute:  # sources unknown: every BatchNorm layer
                update_bn(self.model, self._train_batches(), "the train split")
        else:
            assert candidate.epochs is not None
            plan = plan_from_run(self.run, candidate.epochs)
            load_into_model(self.model, iter_plan(plan), f"run directory {self.run.label}", self.model_desc, FIT_FIX)
            if recompute:
                recompute_batchnorm(self.model, plan, self._train_batches)

    def _train_batches(self) -> Any:
        assert self.batches is not None
        return self.batches(self.splits["train"])

    def score(self, split: str) -> tuple[dict[str, float], np.ndarray | None]:
        """Scalar metrics of the loaded model on ``split``, and its per-example losses."""
        try:
            raw = self.evaluate_fn(self.model, self.splits[split])
        except Exception as error:
            raise UserCodeError(
                f"evaluate callable {self.spec.evaluate!r} raised {one_line(error)} on the {split} split with {self.loaded};"
                " fix it (its traceback is above the error line of a command, in __cause__ in Python)",
                traceback.format_exc(),
            ) from error
        if not isinstance(raw, dict) or self.metric not in raw:
            found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise EvaluationError(
                f"evaluate callable {self.spec.evaluate!r} returned {found} without the objective"
                f" {self.metric!r}; return it or fix objective.metric in the spec"
            )
        per_metric = f"per_example_{self.metric}"
        metrics = {
            k: s for k, v in raw.items() if k not in (LOSSES_KEY, per_metric) and (s := as_scalar(v)) is not None
        }
        if per_metric in raw:
            # The objective itself per example (e.g. per_example_accuracy): the interval then judges
            # exactly what the objective judges. Negated for "max" so that lower is better throughout.
            values = _as_array(raw[per_metric])
            if self.mode == "max":
                values = -values
            self.memo.per_example_name = f"-{per_metric}" if self.mode == "max" else per_metric
            return metrics, values
        losses = raw.get(LOSSES_KEY)
        return metrics, None if losses is None else _as_array(losses)

    def _key(self, candidate: Candidate) -> str:
        path = written = None
        if candidate.model_path is not None:  # a file rewritten at the same path holds other weights
            path = os.path.realpath(candidate.model_path)
            stat = os.stat(path)
            written = [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]  # a copy keeps mtime, not ctime
        return json.dumps([candidate.epochs, path, written, candidate.recompute_bn], sort_keys=True)

    def evaluate(self, candidate: Candidate) -> Evaluated:
        """Metrics on train, val and test (cached by weights, so duplicates cost nothing)."""
        key = self._key(candidate)
        if key not in self.memo.evaluated:
            self.load(candidate)
            metrics, test_losses = {}, None
            for split in SPLITS:
                if split == "val" and key in self.memo.val:
                    metrics[split] = self.memo.val[key]
                    continue
                metrics[split], losses = self.score(split)
                if split == "test":
                    test_losses = losses
            if test_losses is None:
                raise EvaluationError(
                    f"evaluate callable {self.spec.evaluate!r} returned neither 'per_example_{self.metric}'"
                    f" nor {LOSSES_KEY!r}; the paired bootstrap needs one value per test example"
                )
            self.memo.evaluated[key] = Evaluated(candidate, metrics, test_losses)
        cached = self.memo.evaluated[key]
        return Evaluated(candidate, cached.metrics, cached.test_losses)

    def val_objective(self, epochs: EpochSet, recompute_bn: bool) -> float:
        """Validation objective of an epoch set (cached)."""
        candidate = Candidate("validation check", "validation", epochs, recompute_bn=recompute_bn and self.has_bn)
        key = self._key(candidate)
        if key not in self.memo.val:
            self.load(candidate)
            self.memo.val[key] = self.score("val")[0]
        return self.memo.val[key][self.metric]

    def better(self, a: float, b: float) -> bool:
        return is_better(a, b, self.mode)


def verdict(interval: PairedInterval) -> str:
    """What the test interval supports (per-example losses: below zero means the combination is better)."""
    if interval.contains_zero:
        return "no significant difference"
    return "combination better" if interval.high < 0 else "baseline better"


def percent_difference(value: float, baseline: float) -> float:
    """``100 * (value - baseline) / |baseline|`` (nan when the baseline is 0)."""
    return 100.0 * (value - baseline) / abs(baseline) if baseline != 0 else math.nan


def compare(combination: Evaluated, baseline: Evaluated, resamples: int, seed: int) -> Comparison:
    """Percent differences of every metric on val and test, and the paired test interval."""
    percent = {
        split: {
            m: percent_difference(v, baseline.metrics[split][m])
            for m, v in combination.metrics[split].items()
            if m in baseline.metrics[split]
        }
        for split in ("val", "test")
    }
    interval = paired_bootstrap(combination.test_losses, baseline.test_losses, resamples, 0.95, seed)
    return Comparison(baseline.candidate.name, percent, interval, verdict(interval))


def evaluated_by_kind(result: EvaluationResult) -> dict[str, Evaluated]:
    """Each candidate kind's evaluation: deduplicated candidates answer for every kind they were
    (``alias_kinds``), the combination too when it has a baseline's weights."""
    by_kind: dict[str, Evaluated] = {}
    for index, evaluated in enumerate(result.evaluated):
        candidate = evaluated.candidate
        for kind in candidate.alias_kinds if index == 0 else [candidate.kind, *candidate.alias_kinds]:
            by_kind.setdefault(kind, evaluated)
    return by_kind


def greedy_soup_on_validation(evaluator: CandidateEvaluator, progress: bool = False) -> tuple[dict[int, float], GreedySoup]:
    """Every checkpoint's validation objective, and the greedy soup built from them (BatchNorm
    recomputed for averages, as ``combine --update-bn``)."""
    run = evaluator.run
    singles = {
        epoch: evaluator.val_objective(same_epochs(run, [epoch]), False)
        for epoch in tqdm(run.epochs, desc="validation of each checkpoint", disable=not progress)
    }
    with tqdm(total=len(run.epochs) - 1, desc="greedy soup", disable=not progress) as bar:

        def soup_objective(epochs: list[int]) -> float:
            bar.update(1)
            return evaluator.val_objective(same_epochs(run, epochs), True)

        return singles, greedy_soup(singles, soup_objective, evaluator.mode)


def run_evaluation(
    evaluator: CandidateEvaluator,
    combination: Candidate,
    single_epochs: list[int],
    analysis: AnalysisInfo | None,
    resamples: int = 2000,
    seed: int = 0,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate the combination and every baseline; compare the combination with each."""
    run = evaluator.run
    notes = list(evaluator.notes)
    singles_val, soup = greedy_soup_on_validation(evaluator, progress)
    sign = loss_sign(evaluator.mode)
    best = min(singles_val, key=lambda e: (sign * singles_val[e], e))
    candidates = [combination, *single_epoch_candidates(run, single_epochs)]
    for candidate in candidates[1:]:
        notes.extend(candidate.notes)
    candidates.append(Candidate(f"best single on val ({best})", "best_single", same_epochs(run, [best])))
    averaged, averaged_notes = averaged_candidates(run, analysis, evaluator.has_bn)
    candidates.extend(averaged)
    notes.extend(averaged_notes)
    for candidate in averaged:
        notes.extend(f"{candidate.name}: {n}" for n in candidate.notes)
    candidates.append(
        Candidate(
            f"greedy soup ({len(soup.epochs)})",
            "greedy",
            same_epochs(run, soup.epochs),
            recompute_bn=evaluator.has_bn and len(soup.epochs) > 1,
        )
    )
    candidates = deduplicate(candidates, run)
    evaluated = [evaluator.evaluate(c) for c in tqdm(candidates, desc="evaluating candidates", disable=not progress)]
    comparisons = [compare(evaluated[0], other, resamples, seed) for other in evaluated[1:]]
    if evaluator.mode == "max" and evaluator.per_example_name == LOSSES_KEY:
        notes.append(
            f"the objective {evaluator.metric!r} is maximised but the evaluate callable returns no"
            f" 'per_example_{evaluator.metric}': the intervals are over per-example losses, which can"
            f" disagree with the objective; return 'per_example_{evaluator.metric}' to judge the objective itself"
        )
    result = EvaluationResult(evaluator.metric, evaluator.mode, evaluated, comparisons, soup, notes)
    result.per_example_name = evaluator.per_example_name
    choice = choice_for_epochs(soup.epochs, run.epochs)
    result.greedy_selection = Selection({g: choice for g in run.groups}).to_json()
    return result
