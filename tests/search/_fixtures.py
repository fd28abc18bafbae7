"""Scorers over the tiny real run (tests.modules._tiny), fed from the run directory."""

from __future__ import annotations

from modules.rundir.run_dir import RunDir
from search.scoring.scorer import SelectionScorer
from tests.modules import _tiny


def tiny_scorer(run: RunDir, update_bn: bool = True, prefix: tuple[str, ...] = (), fetch_many=None) -> SelectionScorer:
    data = _tiny.load_data()
    key_groups = {k: g for g in run.groups for k in run.group_keys(g)}
    return SelectionScorer(
        _tiny.build_model(),
        key_groups,
        lambda group, epoch: run.read_group(epoch, group),
        _tiny.evaluate,
        "loss",
        lambda: _tiny.batches(data["train"]),
        update_bn,
        prefix,
        fetch_many=fetch_many,
    )
