"""Inside ``evaluating_once`` (a pipeline), a step scores only the weights no earlier step scored
for the same run, spec and device: the evaluate step after auto's guard does not score the greedy
soup again, and the figures are those of the steps run alone. Calls to the spec's evaluate
callable are counted."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from analysis.evaluation.baselines import Candidate
from analysis.evaluation.evaluate import (
    CandidateEvaluator,
    add_validation_scores,
    evaluating_once,
    run_evaluation,
    validation_scores,
)
from analysis.evaluation.validation_guard import best_on_validation
from modules.rundir.run_dir import RunDir
from modules.spec.selection import parse_selection
from tests.modules import _tiny


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every call of the tiny spec's evaluate callable (the spec resolves it by name)."""
    made: list[int] = []
    original = _tiny.evaluate

    def counted(model, split):  # noqa: ANN001, ANN202
        made.append(len(split[0]))
        return original(model, split)

    monkeypatch.setattr(_tiny, "evaluate", counted)
    return made


def _guard_then_evaluate(run: RunDir, calls: list[int]) -> tuple[int, int, list]:
    """Auto's guard, then the evaluate step of the same run: each step's calls, and the step's figures."""
    spec = _tiny.spec()
    first = len(calls)
    best_on_validation(run, spec, {"early": parse_selection({g: run.epochs[0] for g in run.groups})}, update_bn=True)
    guard = len(calls) - first
    combination = Candidate("late", "combination", {g: [run.epochs[-1]] for g in run.groups})
    result = run_evaluation(CandidateEvaluator(spec, run), combination, [run.epochs[0]], None, resamples=200, progress=False)
    figures = [(e.candidate.name, e.metrics, e.test_losses) for e in result.evaluated]
    return guard, len(calls) - first - guard, figures


def test_inside_evaluating_once_a_step_scores_only_what_no_earlier_step_did(tmp_path: Path, calls: list[int]) -> None:
    run = RunDir(_tiny.record_run(tmp_path / "run"))
    alone_guard, alone_evaluate, alone = _guard_then_evaluate(run, calls)
    with evaluating_once():
        guard, evaluate, shared = _guard_then_evaluate(run, calls)
        again_guard, again_evaluate, again = _guard_then_evaluate(run, calls)
    soup = 2 * len(run.epochs) - 1  # every checkpoint on val, then a soup per checkpoint after the first
    assert guard == alone_guard > soup
    assert evaluate <= alone_evaluate - soup
    assert again_guard == again_evaluate == 0
    for ours, theirs in ((shared, alone), (again, alone)):
        assert [(name, metrics) for name, metrics, _ in ours] == [(name, metrics) for name, metrics, _ in theirs]
        assert all(np.array_equal(a[2], b[2]) for a, b in zip(ours, theirs, strict=True))
    # Outside the block nothing is kept between steps.
    assert _guard_then_evaluate(run, calls)[:2] == (alone_guard, alone_evaluate)


def test_validation_scores_sent_from_another_process_spare_the_evaluate_step_the_greedy_soup(
    tmp_path: Path, calls: list[int]
) -> None:
    """What auto's Ray task sends back with its record (pickled), taken by the pipeline's block."""
    run = RunDir(_tiny.record_run(tmp_path / "run"))
    _, alone_evaluate, alone = _guard_then_evaluate(run, calls)
    with evaluating_once() as memos:  # the task's
        best_on_validation(run, _tiny.spec(), {"early": parse_selection({g: run.epochs[0] for g in run.groups})}, update_bn=True)
        sent = pickle.loads(pickle.dumps(validation_scores(memos)))
    add_validation_scores(sent)  # outside a block: kept nowhere
    calls.clear()
    with evaluating_once():
        add_validation_scores(sent)
        combination = Candidate("late", "combination", {g: [run.epochs[-1]] for g in run.groups})
        result = run_evaluation(CandidateEvaluator(_tiny.spec(), run), combination, [run.epochs[0]], None, resamples=200, progress=False)
    assert len(calls) <= alone_evaluate - (2 * len(run.epochs) - 1)
    assert [(e.candidate.name, e.metrics) for e in result.evaluated] == [(name, metrics) for name, metrics, _ in alone]


def test_another_run_or_spec_is_scored_anew(tmp_path: Path, calls: list[int]) -> None:
    run = RunDir(_tiny.record_run(tmp_path / "run"))
    other_run = RunDir(_tiny.record_run(tmp_path / "other", seed=1))
    other_spec = _tiny.spec().model_copy(update={"name": "tiny, renamed"})
    candidate = Candidate("late", "combination", {g: [run.epochs[-1]] for g in run.groups})
    calls.clear()  # recording the runs evaluated each epoch
    with evaluating_once():
        CandidateEvaluator(_tiny.spec(), run).evaluate(candidate)
        scored = len(calls)
        assert scored == 3  # train, val and test
        CandidateEvaluator(_tiny.spec(), other_run).evaluate(candidate)
        CandidateEvaluator(other_spec, run).evaluate(candidate)
        CandidateEvaluator(_tiny.spec(), run, splits=_tiny.load_data(seed=1)).evaluate(candidate)  # other data
        assert len(calls) == 4 * scored


def test_a_second_evaluate_of_the_same_run_scores_only_its_combination(tmp_path: Path, calls: list[int]) -> None:
    import sweetspot

    run = _tiny.record_run(tmp_path / "run")
    first, second = {"encoder": 4, "middle": 4, "head": 5}, {"encoder": 1, "middle": 2, "head": 3}
    calls.clear()
    alone = sweetspot.evaluate(run, second, spec=_tiny.spec(), update_bn=True, resamples=200, device="cpu")
    with sweetspot.evaluating_once():
        sweetspot.evaluate(run, first, spec=_tiny.spec(), update_bn=True, resamples=200, device="cpu")
        before = len(calls)
        shared = sweetspot.evaluate(run, second, spec=_tiny.spec(), update_bn=True, resamples=200, device="cpu")
    assert len(calls) - before == 3  # the new combination on train, val and test; no baseline again
    assert [e.metrics for e in shared.result.evaluated] == [e.metrics for e in alone.result.evaluated]


def test_a_model_file_rewritten_in_place_is_scored_anew_even_with_its_old_size_and_time(tmp_path: Path, calls: list[int]) -> None:
    import os
    import shutil

    from modules.combine.combine import combine

    run = RunDir(_tiny.record_run(tmp_path / "run"))
    first, other = tmp_path / "first.safetensors", tmp_path / "other.safetensors"
    combine(run, parse_selection({g: run.epochs[0] for g in run.groups}), first, spec=_tiny.spec())
    combine(run, parse_selection({g: run.epochs[-1] for g in run.groups}), other, spec=_tiny.spec())
    before = os.stat(first)
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    calls.clear()
    with evaluating_once():
        evaluator = CandidateEvaluator(_tiny.spec(), run)
        old = evaluator.evaluate(Candidate("file", "combination", None, model_path=first)).metrics
        shutil.copy2(other, first)  # other weights, same path, size and modification time
        assert (os.stat(first).st_size, os.stat(first).st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        new = evaluator.evaluate(Candidate("file", "combination", None, model_path=first)).metrics
    assert len(calls) == 6 and new != old
