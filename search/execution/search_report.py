"""The search's outputs, each written atomically: trials.parquet, best_selection.json,
search_report.md, the evaluate step's files and the plots."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from analysis.evaluation.report import headline
from analysis.evaluation.report import write_report as write_evaluation
from modules.atomic import atomic_path, write_json_atomic, write_text_atomic
from modules.spec.schema import loss_sign
from modules.spec.selection import choice_for_epochs
from search.execution.results import DIGITS, ScoredSelection, SearchResult

TRIALS_NAME = "trials.parquet"
SELECTION_NAME = "best_selection.json"
SUMMARY_NAME = "search_summary.json"
REPORT_NAME = "search_report.md"


def selection_document(candidate: ScoredSelection, recorded: list[int]) -> dict[str, Any]:
    """``selection.json`` form plus the pick's objectives under ``_``-keys (ignored as groups)."""
    out: dict[str, Any] = {}
    for group, epochs in candidate.epochs.items():
        choice = choice_for_epochs(list(epochs), recorded)
        out[group] = choice if isinstance(choice, int) else choice.model_dump(mode="json")
    out["_search_objective"] = candidate.search_score
    out["_confirm_objective"] = candidate.confirm_score
    out["_test_objective"] = candidate.test_score
    return out


#: Significant digits the report prints an objective with (the plots draw no difference below them).


def _num(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{DIGITS}g}"


def _bn_line(trials: Any) -> str:
    """How often stale BatchNorm statistics were recomputed over the train split, and reused."""
    if trials.empty or "bn_recomputed" not in trials:
        return "recomputed for stale layers"
    recomputed = int(trials["bn_recomputed"].fillna(0).sum())
    reused = int(trials["bn_reused"].fillna(0).sum()) if "bn_reused" in trials else 0
    return f"recomputed for stale layers ({recomputed} passes over the train split, {reused} reused for the same choices)"


def _short(epochs: dict[str, list[int]]) -> str:
    parts = []
    for group, chosen in epochs.items():
        chosen = sorted(chosen)
        if len(chosen) == 1:
            parts.append(f"{group} {chosen[0]}")
        else:
            parts.append(f"{group} avg{chosen}")
    return ", ".join(parts)


def _gain(value: float | None, reference: float | None, mode: str) -> float | None:
    """Percent improvement of ``value`` over ``reference`` (positive = better)."""
    if value is None or reference is None or reference == 0:
        return None
    sign = loss_sign(mode)
    return 100.0 * sign * (reference - value) / abs(reference)


def report_markdown(result: SearchResult, run_path: str) -> str:
    mode, metric = result.mode, result.objective
    pick = result.pick
    lines = [f"# Crossover search of {run_path}", ""]
    if result.evaluation is not None:
        lines += [headline(result.evaluation.result), ""]
    trials = result.trials
    counts = trials["status"].value_counts().to_dict() if not trials.empty else {}
    memo_rows = int(trials["from_memo"].sum()) if not trials.empty else 0
    lines += [
        f"Objective: {metric} ({'lower' if mode == 'min' else 'higher'} is better), chosen on validation"
        f" ({result.settings['search_examples']} search examples, {result.settings['confirm_examples']} held back"
        " to confirm), reported on the held-out test split.",
        "",
        "## The pick",
        "",
        f"{_short(pick.epochs)} (found by {pick.origin}).",
        "",
        "| selection | search (val) | confirm (val) | test |",
        "| --- | --- | --- | --- |",
        f"| **search pick** | {_num(pick.search_score)} | {_num(pick.confirm_score)} | {_num(pick.test_score)} |",
    ]
    for name, baseline in result.baselines.items():
        lines.append(f"| {name} | {_num(baseline.search_score)} | — | {_num(baseline.test_score)} |")
    lines += ["", "Search scores of baselines are their trials' (shard-weighted) scores on the search split.", ""]
    reference = result.baselines.get("best single epoch")
    lines += [
        "## What survives: top candidates on search, confirm and test",
        "",
        "The best of many combinations on validation is partly luck. Each top candidate was rescored on"
        " the whole search split and on the held-back confirm part; the pick is the best on the confirm"
        " part. Gains are over the best single epoch (positive = better).",
        "",
        "| rank | selection | search | confirm | test | search gain | test gain | kept |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rank, top in enumerate(result.top, start=1):
        search_gain = _gain(top.search_score, reference.search_score if reference else None, mode)
        test_gain = _gain(top.test_score, reference.test_score if reference else None, mode)
        kept = f"{100 * test_gain / search_gain:.0f}%" if search_gain and test_gain is not None and search_gain > 0 else "—"
        mark = " **(pick)**" if top is pick else ""
        lines.append(
            f"| {rank}{mark} | {_short(top.epochs)} | {_num(top.search_score)} | {_num(top.confirm_score)} |"
            f" {_num(top.test_score)} | {_pct(search_gain)} | {_pct(test_gain)} | {kept} |"
        )
    pool = result.pool
    loads = sum(p["loads"] for p in pool)
    lines += [
        "",
        "## Trials",
        "",
        f"- {_timing(result)}: {', '.join(f'{n} {s}' for s, n in counts.items())}; {memo_rows} answered from the memo.",
        f"- Algorithm {result.settings['algo']}, space of {result.settings['space_size']:,} parameter combinations over"
        f" units {', '.join(result.settings['units'])}; shards {result.settings['shards']}; BatchNorm"
        f" {_bn_line(trials) if result.settings['update_bn'] else 'not recomputed'}.",
        f"- Checkpoint pool: {len(pool)} node(s); {loads} group-epoch loads from disk,"
        f" {sum(p['hits'] for p in pool)} hits, {sum(p['evictions'] for p in pool)} evictions,"
        f" {sum(p['reloads'] for p in pool)} reloads after eviction.",
    ]
    failed = trials[trials["status"] == "failed"] if not trials.empty else trials
    for row in failed.itertuples():
        lines.append(f"- trial {row.trial_id} ({row.selection}) failed: {row.error}")
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    lines += ["", "![convergence](visualizations/convergence.png)", "", "![per group](visualizations/per_group.png)", ""]
    return "\n".join(lines)


def _timing(result: SearchResult) -> str:
    """Trials, seconds and rate; after --resume the rate counts only the trials this part ran."""
    rate = f"{result.trials_per_second:.2f} trials/s, Ray start included"
    if not result.earlier_trials:
        return f"{len(result.trials)} trials in {result.seconds:.1f} s ({rate})"
    return (
        f"{len(result.trials)} trials: {result.earlier_trials} before --resume, {result.trials_run} after it in"
        f" {result.seconds:.1f} s ({rate})"
    )


def summary_json(result: SearchResult, run_path: str) -> dict[str, Any]:
    """What later steps (calibration) need: the settings, the pick, the top and the baselines."""

    def candidate(c: ScoredSelection) -> dict[str, Any]:
        return {"epochs": c.epochs, "origin": c.origin, "search": c.search_score, "confirm": c.confirm_score, "test": c.test_score}

    return {
        "format_version": 1,
        "run_dir": run_path,
        "objective": {"metric": result.objective, "mode": result.mode},
        "settings": result.settings,
        "pick": candidate(result.pick),
        "top": [candidate(c) for c in result.top],
        "baselines": {name: candidate(c) for name, c in result.baselines.items()},
        "analysis_pick": result.analysis_pick,
        "trials": len(result.trials),
        "trials_before_resume": result.earlier_trials,
        "seconds": result.seconds,
        "pool": result.pool,
        "memo": result.memo,
        "notes": result.notes,
    }


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}%"


def write_search_outputs(
    result: SearchResult, output: str | os.PathLike[str], run_path: str, recorded: list[int], plots: bool = True
) -> dict[str, Path]:
    """Every output of the search into ``output``; returns their paths. ``plots=False`` keeps the
    plots already written (they show validation only: the evaluate step does not change them)."""
    from search.execution.search_plots import plot_convergence, plot_per_group

    output = Path(output)
    paths = {
        "trials": output / TRIALS_NAME,
        "selection": output / SELECTION_NAME,
        "report": output / REPORT_NAME,
        "summary": output / SUMMARY_NAME,
        "convergence": output / "visualizations" / "convergence.png",
        "per_group": output / "visualizations" / "per_group.png",
    }
    with atomic_path(paths["trials"]) as tmp:
        result.trials.to_parquet(tmp, index=False)
    write_json_atomic(paths["selection"], selection_document(result.pick, recorded))
    write_json_atomic(paths["summary"], summary_json(result, run_path))
    if plots:
        plot_convergence(result, paths["convergence"])
        plot_per_group(result, paths["per_group"])
    if result.evaluation is not None:
        extra = {"run_dir": run_path, "search_selection": selection_document(result.pick, recorded)}
        paths.update({f"evaluation_{k}": v for k, v in write_evaluation(result.evaluation.result, output, extra).items()})
    write_text_atomic(paths["report"], report_markdown(result, run_path))
    return paths
