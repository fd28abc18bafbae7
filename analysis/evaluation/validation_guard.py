"""Choose among a few selections of one run on its validation split: the best of them, and the
greedy soup (Wortsman et al. 2022) as a fallback any selector must beat. Test is not touched."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from analysis.evaluation.evaluate import CandidateEvaluator, greedy_soup_on_validation
from modules.combine.plan import selection_epochs
from modules.rundir.run_dir import RunDir
from modules.spec.schema import Spec, loss_sign
from modules.spec.selection import Selection, choice_for_epochs

GREEDY_SOUP = "the greedy soup"


@dataclass
class GuardedChoice:
    """The chosen selection, its name, and every candidate's selection and validation objective."""

    name: str
    selection: Selection
    val: dict[str, float]
    candidates: dict[str, Selection]


def best_on_validation(
    run: RunDir, spec: Spec, candidates: Mapping[str, Selection], update_bn: bool, device: str = "cpu"
) -> GuardedChoice:
    """The best on validation of ``candidates`` (in order: the first wins a tie) and the run's
    greedy soup; BatchNorm of the candidates is recomputed as ``combine --update-bn`` would when
    ``update_bn`` (the soup's always, as the evaluate step does)."""
    evaluator = CandidateEvaluator(spec, run, device=device)
    options = dict(candidates)
    val = {name: evaluator.val_objective(selection_epochs(s, run), update_bn) for name, s in options.items()}
    _, soup = greedy_soup_on_validation(evaluator)  # the same soup as the evaluate step's
    options[GREEDY_SOUP] = Selection({g: choice_for_epochs(soup.epochs, run.epochs) for g in run.groups})
    val[GREEDY_SOUP] = soup.objective
    sign = loss_sign(evaluator.mode)
    order = list(options)
    name = min(order, key=lambda n: (sign * val[n], order.index(n)))
    return GuardedChoice(name, options[name], val, options)
