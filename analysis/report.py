"""Write the analysis: ``module_metrics.json``, ``analysis_report.md`` and ``selection.json``.

``module_metrics.json`` (format_version 1)::

    format_version, source (the run), spec, epochs (checkpoint epochs),
    thresholds (the five keys used), techniques (names, in run order), notes (warnings),
    model_metrics: {metric: [value per epoch, null where missing]},
    groups: {group: {
        judging_metrics: [{metric, mode}], judged_by_fallback, health_source
            ("recorded" | "weights" | "none"), analysed_epochs,
        metrics: {metric: [value per epoch]}  (the group's own: grad_norm, update_ratio, ...),
        judging_values: {metric: [value per analysed epoch]}  (its judging metrics),
        health: {metric: [value per analysed epoch]}  (what the gradient technique used),
        techniques: {name: {epoch, confidence, reasons, details[, average]}},
        pick: epoch | {"average": [first, last]}, confidence, plateau_window: [first, last] | null,
        notes}}
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.techniques.base import fmt_window
from modules.atomic import write_json_atomic, write_text_atomic
from modules.selection import save_selection

if TYPE_CHECKING:
    from analysis.pipeline import GroupAnalysis, RunAnalysis

METRICS_FILE = "module_metrics.json"
REPORT_FILE = "analysis_report.md"
SELECTION_FILE = "selection.json"


def _values(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=float).tolist()]


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to null."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _group_json(result: GroupAnalysis) -> dict[str, Any]:
    series = result.series
    metrics = {m: _values(v) for m, v in series.recorded.items()}
    return {
        "judging_metrics": [j.model_dump() for j in series.judging],
        "judged_by_fallback": series.judged_by_fallback,
        "health_source": series.health_source,
        "analysed_epochs": series.epochs.tolist(),
        "metrics": metrics,
        "judging_values": {m: _values(v) for m, v in series.values.items()},
        "health": {m: _values(v) for m, v in series.health.items()},
        "techniques": {name: rec.to_json() for name, rec in result.recommendations.items()},
        "pick": result.pick_json(),
        "confidence": round(result.final.confidence, 4),
        "plateau_window": list(result.plateau_window) if result.plateau_window else None,
        "notes": list(series.notes),
    }


def module_metrics_json(analysis: RunAnalysis) -> dict[str, Any]:
    """The content of ``module_metrics.json``."""
    names = next(iter(analysis.groups.values())).recommendations if analysis.groups else {}
    return _clean(
        {
            "format_version": 1,
            "source": analysis.source,
            "spec": analysis.spec_name,
            "epochs": analysis.epochs,
            "thresholds": analysis.thresholds.to_json(),
            "techniques": list(names),
            "notes": analysis.notes,
            "model_metrics": {m: _values(v) for m, v in analysis.model_metrics.items()},
            "groups": {g: _group_json(r) for g, r in analysis.groups.items()},
        }
    )


def module_title(group: str) -> str:
    """``wrapper_emotion`` -> ``Wrapper Emotion`` (the seed's ``[Module: Backbone]`` form)."""
    return " ".join(part.capitalize() for part in group.replace("-", "_").split("_") if part)


def group_block(group: str, result: GroupAnalysis) -> str:
    """One seed phase 3.2 block: module, recommended epoch, numbered reasons, confidence."""
    final = result.final
    if isinstance(result.pick, int):
        head = f"- Recommended epoch: {result.pick}"
    else:
        head = f"- Recommended: average of epochs {fmt_window(result.pick)}"
    lines = [f"[Module: {module_title(group)}]", head, "- Reasons:"]
    seen: list[str] = []
    for reason in final.reasons:
        if reason not in seen:
            seen.append(reason)
    health = result.recommendations.get("gradient_health")
    if health and health.reasons and health.reasons[0] not in seen and len(seen) < 6:
        seen.append(health.reasons[0])
    lines += [f"  {i}. {reason}" for i, reason in enumerate(seen, 1)]
    lines.append(f"- Confidence: {round(final.confidence * 100)}%")
    return "\n".join(lines)


def report_markdown(analysis: RunAnalysis) -> str:
    """``analysis_report.md``: one block per group, then a table of every technique's pick."""
    parts = [f"# Sweet-spot analysis of {analysis.source}", ""]
    parts.append(f"Spec `{analysis.spec_name}`, {len(analysis.epochs)} checkpoints (epochs {analysis.epochs[0]}-{analysis.epochs[-1]}).")
    parts.append(f"Thresholds: `{analysis.thresholds.to_json()}`")
    parts.append("")
    parts.append("```")
    parts.append("\n\n".join(group_block(g, r) for g, r in analysis.groups.items()))
    parts.append("```")
    parts.append("")
    names = list(next(iter(analysis.groups.values())).recommendations)
    parts.append("| group | " + " | ".join(names) + " | pick | plateau |")
    parts.append("|" + " --- |" * (len(names) + 3))
    for group, result in analysis.groups.items():
        cells = []
        for name in names:
            rec = result.recommendations[name]
            text = f"avg {fmt_window(rec.average)}" if rec.average else str(rec.epoch)
            cells.append(f"{text} ({rec.confidence:.0%})")
        pick = str(result.pick) if isinstance(result.pick, int) else f"avg {fmt_window(result.pick)}"
        parts.append(f"| {group} | " + " | ".join(cells) + f" | {pick} | {fmt_window(result.plateau_window)} |")
    if analysis.notes:
        parts += ["", "## Notes", ""] + [f"- {note}" for note in analysis.notes]
    return "\n".join(parts) + "\n"


def write_outputs(analysis: RunAnalysis, output: str | os.PathLike[str], plots: bool = True) -> dict[str, Path]:
    """Write module_metrics.json, analysis_report.md, selection.json (and visualizations/)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    written = {
        "metrics": output / METRICS_FILE,
        "report": output / REPORT_FILE,
        "selection": output / SELECTION_FILE,
    }
    write_json_atomic(written["metrics"], module_metrics_json(analysis))
    write_text_atomic(written["report"], report_markdown(analysis))
    save_selection(analysis.selection, written["selection"])
    if plots:
        from analysis.plots import write_plots

        written["visualizations"] = output / "visualizations"
        write_plots(analysis, written["visualizations"])
    return written
