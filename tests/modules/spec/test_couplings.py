"""The one coupling rule: pick centres (a window's midpoint) within the coupling's max_epoch_gap."""

from __future__ import annotations

import itertools

from modules.spec.couplings import (
    coupling_allows,
    coupling_spread,
    coupling_violations,
    pick_centre,
)
from modules.spec.schema import Coupling

A = Coupling(name="A", groups=["backbone", "heads", "neck"], max_epoch_gap=4)


def test_centres_of_epochs_and_windows() -> None:
    assert pick_centre(44) == 44.0 and pick_centre((10, 20)) == 15.0 and pick_centre((10, 11)) == 10.5


def test_the_case_from_issue_7_is_judged_once_the_same_way() -> None:
    # heads at 20 beside a backbone window 10-20: centres 15 and 20, 5 apart
    assert not coupling_allows(A, {"backbone": (10, 20), "heads": 20})
    assert coupling_allows(A, {"backbone": (10, 20), "heads": 19})
    assert coupling_allows(Coupling(groups=["backbone", "heads"], max_epoch_gap=5), {"backbone": (10, 20), "heads": 20})


def test_every_pair_counts_and_unnamed_groups_are_not_checked() -> None:
    assert coupling_spread(A, {"backbone": 10, "heads": 14, "neck": 6}) == 8
    assert not coupling_allows(A, {"backbone": 10, "heads": 14, "neck": 6})  # each within 4 of backbone, not of each other
    assert coupling_allows(A, {"backbone": 10, "other": 50})
    assert coupling_allows(A, {})


def test_allowed_matches_a_brute_force_over_pairs() -> None:
    picks = [2, 4, 6, 10, (2, 6), (4, 12), (8, 8)]
    for a, b, c in itertools.product(picks, repeat=3):
        selection = {"backbone": a, "heads": b, "neck": c}
        centres = [(x if isinstance(x, int) else (x[0] + x[1]) / 2) for x in (a, b, c)]
        expected = all(abs(p - q) <= 4 for p, q in itertools.combinations(centres, 2))
        assert coupling_allows(A, selection) == expected
        assert (coupling_violations(selection, [A]) == []) == expected


def test_violations_name_the_coupling_the_groups_and_the_distance() -> None:
    assert coupling_violations({"backbone": (10, 20), "heads": 20}, [Coupling(groups=["backbone", "heads"])]) == [
        "coupling couplings[0] allows 0 epochs between its groups, but the selection puts backbone at 15,"
        " heads at 20 (5 apart; an averaged window counts at its midpoint)"
    ]
