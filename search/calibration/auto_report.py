"""``auto_summary.parquet`` and ``auto_summary.md``: one row per run of ``auto``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from modules.atomic import atomic_path, write_text_atomic

if TYPE_CHECKING:
    from search.calibration.auto_results import AutoResult, AutoRun

SUMMARY_PARQUET = "auto_summary.parquet"
SUMMARY_MD = "auto_summary.md"
BASELINES = (("best_single", "best single epoch"), ("greedy_soup", "greedy soup"))


def summary_row(outcome: AutoRun) -> dict[str, Any]:
    record = outcome.record
    row: dict[str, Any] = {
        "run": outcome.run,
        "name": outcome.name,
        "status": outcome.status,
        "error": outcome.error,
        "folder": str(outcome.folder),
        "selection": json.dumps(record["selection"]) if "selection" in record else None,
        "val_objective": record.get("val"),
        "test_objective": record.get("test"),
        "seconds": record.get("seconds"),
        "evaluations": (record.get("budget") or {}).get("evaluations"),
        "budget": (record.get("budget") or {}).get("budget"),
        "kept": (record.get("guard") or {}).get("chosen"),
    }
    for key, _ in BASELINES:
        figures = record.get(key) or {}
        low, high = figures.get("test_difference") or (None, None)
        row.update(
            {
                f"{key}": figures.get("name"),
                f"{key}_val_gain_pct": figures.get("val_gain_pct"),
                f"{key}_test_gain_pct": figures.get("test_gain_pct"),
                f"{key}_test_difference_low": low,
                f"{key}_test_difference_high": high,
                f"{key}_verdict": figures.get("verdict"),
            }
        )
    return row


def _num(value: Any) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.5g}"


def _gain(row: dict[str, Any], key: str) -> str:
    if row.get(f"{key}_test_gain_pct") is None:
        return "—"
    low, high = row[f"{key}_test_difference_low"], row[f"{key}_test_difference_high"]
    return (
        f"{row[f'{key}_val_gain_pct']:+.2f}% / {row[f'{key}_test_gain_pct']:+.2f}%"
        f" [{low:+.4g}, {high:+.4g}] ({row[f'{key}']})"
    )


def _selection_text(selection: str | None) -> str:
    if selection is None:
        return "—"
    parts = []
    for group, choice in json.loads(selection).items():
        if isinstance(choice, dict) and "average" in choice:
            parts.append(f"{group} avg {choice['average'][0]}-{choice['average'][1]}")
        elif isinstance(choice, dict):
            parts.append(f"{group} {choice.get('epochs')}")
        else:
            parts.append(f"{group} {choice}")
    return ", ".join(parts)


def summary_markdown(result: AutoResult, rows: list[dict[str, Any]]) -> str:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
    lines = [
        "# Automatic sweet-spot runs",
        "",
        f"{len(rows)} run(s) in {result.seconds:.1f} s: {counts['done']} done, {counts['skipped']} skipped"
        f" (complete from an earlier call), {counts['failed']} failed.",
        "",
        "Gains are the combination's over the baseline, on validation / test (percent, positive = better);"
        " the bracket is the 95% paired-bootstrap interval of the per-example test difference (combination"
        " minus baseline; below zero favours the combination). Baselines are chosen on validation.",
        "",
        "Evaluations: selections scored on the run's whole validation split to choose (the greedy soup's"
        " included; a repeated selection is free) against the budget; *kept* names where the selection came"
        " from (the refinement, the calibration's prediction, the greedy soup, ...).",
        "",
        "| run | status | selection | kept | evaluations | val | test | gain over best single epoch | gain over greedy soup |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        spent = "—" if row.get("evaluations") is None else f"{row['evaluations']} of {row['budget']}"
        lines.append(
            f"| {row['name']} | {row['status']} | {_selection_text(row['selection'])} | {row.get('kept') or '—'} | {spent} |"
            f" {_num(row['val_objective'])} | {_num(row['test_objective'])} | {_gain(row, 'best_single')} |"
            f" {_gain(row, 'greedy_soup')} |"
        )
    if any(r["status"] != "failed" and r["test_objective"] is None for r in rows):
        lines += ["", "Runs without val/test figures were not evaluated: run auto with --evaluate."]
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [f"- {r['name']} ({r['run']}): {r['error']} (traceback in {r['folder']}/auto_error.txt)" for r in failed]
    lines.append("")
    return "\n".join(lines)


def write_summary(result: AutoResult) -> dict[str, Path]:
    rows = [summary_row(outcome) for outcome in result.runs]
    paths = {"summary": result.output / SUMMARY_PARQUET, "report": result.output / SUMMARY_MD}
    with atomic_path(paths["summary"]) as tmp:
        pd.DataFrame(rows).to_parquet(tmp, index=False)
    write_text_atomic(paths["report"], summary_markdown(result, rows))
    return paths
