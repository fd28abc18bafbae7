"""Soups: uniform, LAWA and plateau epoch sets; greedy soup on a case with a known answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modules.combine.combine import write_combined
from modules.combine.plan import plan_from_run
from modules.combine.soups import greedy_soup, lawa, plateau_average, uniform_soup
from modules.errors import CombineError
from modules.rundir.run_dir import RunDir, RunWriter

# Epoch e stores w = VALUES[e]; the "validation objective" of a soup is |mean(w) - 10|.
VALUES = {1: 0.0, 2: 4.0, 3: 9.0, 4: 12.0, 5: 30.0, 6: 20.0}


@pytest.fixture(scope="module")
def scalar_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    path = tmp_path_factory.mktemp("soup") / "run"
    writer = RunWriter.create(path, "scalar", {"a": ["a.w"], "b": ["b.w"]})
    for epoch, value in VALUES.items():
        writer.write_epoch(epoch, {"a": {"a.w": torch.tensor([value])}, "b": {"b.w": torch.tensor([-value])}})
    return RunDir(path)


def test_uniform_and_lawa_epoch_sets(scalar_run: RunDir) -> None:
    assert uniform_soup(scalar_run) == {"a": [1, 2, 3, 4, 5, 6], "b": [1, 2, 3, 4, 5, 6]}
    assert lawa(scalar_run) == {"a": [2, 3, 4, 5, 6], "b": [2, 3, 4, 5, 6]}
    assert lawa(scalar_run, last=2)["b"] == [5, 6]


def test_plateau_average_falls_back_to_pick(scalar_run: RunDir) -> None:
    epochs, notes = plateau_average(scalar_run, {"a": (3, 5), "b": None}, {"a": [4], "b": [2]})
    assert epochs == {"a": [3, 4, 5], "b": [2]}
    assert notes == ["b: no plateau found, used its pick [2]"]
    with pytest.raises(CombineError, match="'b' has no plateau window"):
        plateau_average(scalar_run, {"a": (3, 5)}, {})


def test_greedy_soup_known_answer(scalar_run: RunDir, tmp_path: Path) -> None:
    calls = []

    def soup_objective(epochs: list[int]) -> float:
        calls.append(epochs)
        out = tmp_path / f"soup-{'-'.join(map(str, epochs))}.safetensors"
        write_combined(plan_from_run(scalar_run, {"a": epochs, "b": epochs}), out)
        return abs(float(load_file(out)["a.w"][0]) - 10.0)

    singles = {e: abs(v - 10.0) for e, v in VALUES.items()}
    soup = greedy_soup(singles, soup_objective, mode="min")
    # By hand: ranking 3 (1), 4 (2), 2 (6), 1 (10), 6 (10; ties by epoch), 5 (20).
    # {3,4}: mean 10.5 -> 0.5 < 1 kept; {2,3,4}: 25/3 -> 1.67 no; {1,3,4}: 7 -> 3 no;
    # {3,4,6}: 41/3 -> 3.67 no; {3,4,5}: 17 -> 7 no.
    assert soup.epochs == [3, 4]
    assert soup.objective == pytest.approx(0.5)
    assert calls == [[3, 4], [2, 3, 4], [1, 3, 4], [3, 4, 6], [3, 4, 5]]
    assert [kept for _, _, kept in soup.steps] == [True, True, False, False, False, False]
    # maximising picks by the other direction: the top single is epoch 5
    assert greedy_soup({1: 1.0, 5: 3.0}, lambda e: 2.0, mode="max").epochs == [5]
