"""The trial scorer: scores what combine would hand over, copies only changed groups, and the
prefix cache never changes a score."""

from __future__ import annotations

from pathlib import Path

import pytest

from modules.combine.combine import combine
from modules.combine.model_fit import load_file_into_model
from modules.rundir.run_dir import RunDir
from tests.modules import _tiny
from tests.search._fixtures import tiny_scorer

SELECTIONS = [
    {"encoder": [3], "middle": [3], "head": [3]},
    {"encoder": [2, 3, 4], "middle": [5], "head": [1]},  # averaged encoder: its BatchNorm is stale
    {"encoder": [5], "middle": [2], "head": [6]},  # crossover below an unchanged encoder
    {"encoder": [1], "middle": [2, 3], "head": [6]},
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    return RunDir(_tiny.record_run(tmp_path_factory.mktemp("tiny") / "run"))


def _handed_over_score(run: RunDir, epochs: dict, tmp: Path) -> float:
    """combine --update-bn of the selection, loaded from the file and evaluated on val."""
    data = _tiny.load_data()
    output = tmp / "combined.safetensors"
    selection = {g: e[0] if len(e) == 1 else {"average": [min(e), max(e)]} for g, e in epochs.items()}
    combine(run, selection, output, spec=_tiny.spec(), update_bn=True)
    model = _tiny.build_model()
    load_file_into_model(output, model)
    return _tiny.evaluate(model, data["val"])["loss"]


def test_a_trial_scores_exactly_the_model_combine_hands_over(tiny_run: RunDir, tmp_path: Path) -> None:
    scorer = tiny_scorer(tiny_run)
    val = _tiny.load_data()["val"]
    for epochs in SELECTIONS:
        scorer.load(epochs)
        assert scorer.score(val, "val")["loss"] == _handed_over_score(tiny_run, epochs, tmp_path)
    assert scorer.stats.bn_recomputes == 1  # only the averaged encoder made BatchNorm stale


def test_only_groups_whose_choice_changed_are_copied(tiny_run: RunDir) -> None:
    scorer = tiny_scorer(tiny_run, update_bn=False)
    assert len(scorer.load({"encoder": [1], "middle": [1], "head": [1]})) == 3
    assert scorer.load({"encoder": [1], "middle": [1], "head": [4]}) == ["head"]
    assert scorer.load({"encoder": [1], "middle": [1], "head": [4]}) == []
    assert scorer.load({"encoder": [1], "middle": [2, 3], "head": [4]}) == ["middle"]
    assert scorer.stats.groups_copied == 5


def test_a_load_fetches_every_changed_group_epoch_in_one_call_when_the_store_can(tiny_run: RunDir, tmp_path: Path) -> None:
    calls: list[list[tuple[str, int]]] = []

    def fetch_many(keys: list[tuple[str, int]]) -> list:
        calls.append(list(keys))
        return [tiny_run.read_group(epoch, group) for group, epoch in keys]

    scorer = tiny_scorer(tiny_run, fetch_many=fetch_many)
    scorer.fetch = None  # every read goes through fetch_many
    val = _tiny.load_data()["val"]
    for epochs in SELECTIONS:
        scorer.load(epochs)
        assert scorer.score(val, "val")["loss"] == _handed_over_score(tiny_run, epochs, tmp_path)
    assert calls[0] == [("encoder", 3), ("middle", 3), ("head", 3)]
    assert calls[1] == [("encoder", 2), ("encoder", 3), ("encoder", 4), ("middle", 5), ("head", 1)]
    assert len(calls) == len(SELECTIONS)  # one call per load


def test_recomputed_batchnorm_is_reloaded_when_no_longer_stale(tiny_run: RunDir) -> None:
    scorer = tiny_scorer(tiny_run)
    val = _tiny.load_data()["val"]
    scorer.load({"encoder": [3], "middle": [3], "head": [3]})
    plain = scorer.score(val, "val")["loss"]
    scorer.load({"encoder": [2, 3], "middle": [3], "head": [3]})  # recomputes the encoder's BatchNorm
    assert "encoder" in scorer.load({"encoder": [3], "middle": [3], "head": [3]})
    assert scorer.score(val, "val")["loss"] == plain


def test_the_prefix_cache_gives_the_same_scores_and_skips_the_prefix(tiny_run: RunDir) -> None:
    cached, plain = tiny_scorer(tiny_run, prefix=("encoder",)), tiny_scorer(tiny_run)
    val = _tiny.load_data()["val"]
    for epochs in [*SELECTIONS, {"encoder": [5], "middle": [6], "head": [1]}, {"encoder": [5], "middle": [2], "head": [2]}]:
        cached.load(epochs)
        plain.load(epochs)
        assert cached.score(val, "val") == plain.score(val, "val")
    assert cached.stats.prefix_hits == 2  # the last two reuse encoder 5's output
    assert cached.stats.prefix_misses == 4


def test_batchnorm_statistics_are_reused_for_the_same_choices_with_the_same_scores(tiny_run: RunDir) -> None:
    scorer = tiny_scorer(tiny_run)
    val = _tiny.load_data()["val"]
    averaged = [
        {"encoder": [2, 3, 4], "middle": [5], "head": [1]},
        {"encoder": [2, 3, 4], "middle": [2], "head": [6]},  # same encoder: its statistics are reused
        {"encoder": [1, 2], "middle": [2], "head": [6]},
        {"encoder": [2, 3, 4], "middle": [5], "head": [1]},  # back to the first: reused again
    ]
    for epochs in averaged:
        scorer.load(epochs)
        fresh = tiny_scorer(tiny_run)  # an empty cache: recomputed over the train split
        fresh.load(epochs)
        assert scorer.score(val, "val") == fresh.score(val, "val")
        assert fresh.stats.bn_recomputes == 1
    assert (scorer.stats.bn_recomputes, scorer.stats.bn_hits) == (2, 2)
