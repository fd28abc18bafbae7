"""The search space: every decoded config satisfies the couplings; encode inverts decode."""

from __future__ import annotations

import random

import pytest

from modules.spec.couplings import coupling_allows
from modules.spec.schema import parse_spec
from search.algorithms.space import CrossoverSpace, SpaceError, selection_key

RECORDED = [2, 4, 6, 8, 10, 12, 14]


def _spec(couplings: list[dict]) -> object:
    return parse_spec(
        {
            "name": "s", "model": "m:f", "data": "m:f", "evaluate": "m:f",
            "groups": {g: [f"{g}."] for g in ("enc", "head", "aux", "solo", "extra")},
            "couplings": couplings,
        },
        "spec",
    )


def _pick(epochs: list[int]) -> int | tuple[int, int]:
    return (min(epochs), max(epochs)) if len(epochs) > 1 else epochs[0]


@pytest.mark.parametrize("half_width", [0, 2])
def test_decoded_selections_keep_every_coupling(half_width: int) -> None:
    spec = _spec([{"groups": ["enc", "head"], "max_epoch_gap": 0}, {"groups": ["aux", "solo", "extra"], "max_epoch_gap": 4}])
    groups = ["enc", "head", "aux", "solo", "extra"]
    space = CrossoverSpace.build(spec, groups, RECORDED, max_half_width=half_width)
    rng = random.Random(0)
    grid = space.grid()
    for _ in range(500):
        epochs = space.decode({name: rng.choice(values) for name, values in grid.items()})
        assert epochs["enc"] == epochs["head"]
        picks = {g: _pick(v) for g, v in epochs.items()}
        assert all(coupling_allows(c, picks) for c in spec.couplings)  # the one coupling rule
        for chosen in epochs.values():
            assert chosen and all(e in RECORDED for e in chosen)
            index = [RECORDED.index(e) for e in chosen]
            assert index == list(range(index[0], index[0] + len(index)))  # a contiguous window


def test_encode_inverts_decode_and_refuses_what_the_space_cannot_express() -> None:
    spec = _spec([{"groups": ["enc", "head"], "max_epoch_gap": 0}])
    space = CrossoverSpace.build(spec, ["enc", "head", "aux", "solo"], RECORDED, max_half_width=1)
    assert "solo.offset" not in space.distributions()
    params = {"enc": 3, "enc.half_width": 1, "aux": 0, "aux.half_width": 0, "solo": 6, "solo.half_width": 1}
    epochs = space.decode(params)
    assert epochs == {"enc": [6, 8, 10], "head": [6, 8, 10], "aux": [2], "solo": [12, 14]}
    again = space.encode({"enc": [6, 8, 10], "head": [6, 8, 10], "aux": [2], "solo": [14]})
    assert again is not None and selection_key(space.decode(again)) == selection_key(
        {"enc": [6, 8, 10], "head": [6, 8, 10], "aux": [2], "solo": [14]}
    )
    assert space.encode({"enc": [6, 10], "head": [6, 10], "aux": [2], "solo": [14]}) is None  # a gap
    assert space.encode({"enc": [6], "head": [8], "aux": [2], "solo": [14]}) is None  # breaks coupling


def test_size_and_enumeration_count_distinct_selections() -> None:
    spec = _spec([{"groups": ["enc", "head"], "max_epoch_gap": 0}])
    space = CrossoverSpace.build(spec, ["enc", "head", "aux", "solo"], [1, 2, 3])
    assert space.size() == 27 and len(space.units) == 3
    assert space.size() == 27
    selections = space.enumerate()
    assert len({selection_key(s) for s in selections}) == 27


def test_bad_spaces_are_refused_with_the_fix() -> None:
    spec = _spec([])
    with pytest.raises(SpaceError, match="at least two"):
        CrossoverSpace.build(spec, ["enc"], [5])
    with pytest.raises(SpaceError, match="single selection"):
        CrossoverSpace.build(spec, ["enc", "head"], [1, 2], candidates={"enc": [1], "head": [2]})
    coupled = _spec([{"groups": ["enc", "aux"], "max_epoch_gap": 0}])
    with pytest.raises(SpaceError, match="does not record"):
        CrossoverSpace.build(coupled, ["enc", "head"], [1, 2])


def test_every_decoded_selection_encodes_back_to_itself() -> None:
    spec = _spec([{"groups": ["aux", "solo", "extra"], "max_epoch_gap": 4}])
    space = CrossoverSpace.build(spec, ["enc", "aux", "solo", "extra"], RECORDED, max_half_width=1)
    rng = random.Random(1)
    grid = space.grid()
    encoded = 0
    for _ in range(300):
        epochs = space.decode({name: rng.choice(values) for name, values in grid.items()})
        params = space.encode(epochs)
        if params is not None:
            encoded += 1
            assert selection_key(space.decode(params)) == selection_key(epochs)
    assert encoded > 200  # baselines told to Optuna must mostly be expressible
