"""Write the analysis: ``module_metrics.json``, ``analysis_report.md`` and ``selection.json``.

``module_metrics.json`` (``format_version`` 1; keys below are always present, in this order;
``null`` stands for a missing/NaN value)::

    format_version: 1
    source:         the analysed run (path as given)
    spec:           the spec's name
    epochs:         [checkpoint epochs], ascending; every "per epoch" list below aligns with it
    thresholds:     the five settings used: plateau_variance, improvement_rate, stability_window,
                    mcda_weights {loss, task, stability, gradient}, voting_confidence
    techniques:     [technique names in run order; "ensemble" last]
    notes:          [warnings: skipped NaN epochs, uneven spacing, fallbacks, weight-derived health]
    model_metrics:  {metric: [value per epoch]}   whole-model metrics (val_*, train_loss, lr_*)
    groups: {group: {
        judging_metrics:    [{metric, mode: "min" | "max"}]   what judges the group
        judged_by_fallback: true when the spec names none and val_<objective> is used
        health_source:      "recorded" (gradients) | "weights" (proxies from consecutive
                            checkpoints, no recorded gradients) | "none"
        analysed_epochs:    [epochs] (epochs minus those skipped for NaN judging metrics)
        metrics:            {metric: [value per epoch]}   the group's own recorded metrics
                            (grad_norm, grad_norm_ratio, update_ratio, dead_fraction, ...)
        judging_values:     {metric: [value per analysed epoch]}
        health:             {metric: [value per analysed epoch]}  what gradient health used
        techniques: {name: {
            epoch:      recommended epoch (for an average: the window's centre)
            confidence: 0..1 (0 = abstains from the vote)
            average:    [first, last]   only when the technique recommends averaging
            reasons:    [sentences with the figures behind the pick]
            details:    technique-specific figures (plateau window, p-values, MCDA criteria,
                        vote shares, ...)}}
        pick:           epoch | {"average": [first, last]}   the ensemble's pick, kept within its couplings (= selection.json)
        confidence:     the ensemble's confidence in its own pick, 0..1; when a coupling moved the
                        pick (coupling_note is set) it is still the confidence of the ensemble's
                        epoch (techniques.ensemble.epoch/average), not of ``pick``
        plateau_window: [first, last] | null   the plateau technique's window
        coupling_note:  why the pick differs from the ensemble's epoch (a coupling moved it) | null
        notes:          [this group's notes]}}
"""

from __future__ import annotations

import json
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
        "coupling_note": result.coupling_note,
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


def pick_label(pick: int | tuple[int, int]) -> str:
    """``44`` -> ``"44"``, ``(42, 48)`` -> ``"average 42-48"``."""
    return str(pick) if isinstance(pick, int) else f"average {fmt_window(pick)}"


def confidence_text(result: GroupAnalysis) -> str:
    """``"89%"``, or for a pick a coupling moved, whose confidence that percentage was:
    ``"moved by coupling A from 18, which had 52%"`` (the ensemble rated its own pick, not this one)."""
    if not result.moved:
        return f"{result.final.confidence:.0%}"
    couplings = ", ".join(result.moved_by) or "a coupling"
    word = "couplings" if len(result.moved_by) > 1 else "coupling"
    return f"moved by {word} {couplings} from {pick_label(result.ensemble_pick)}, which had {result.final.confidence:.0%}"


def pick_summary(group: str, result: GroupAnalysis) -> str:
    """One line per group: ``"backbone: 10 (89%)"`` or ``"heads: 10 (moved by coupling A from 18, which had 52%)"``."""
    return f"{group}: {pick_label(result.pick)} ({confidence_text(result)})"


def group_block(group: str, result: GroupAnalysis) -> str:
    """One seed phase 3.2 block: module, recommended epoch, numbered reasons, confidence."""
    final = result.final
    if isinstance(result.pick, int):
        head = f"- Recommended epoch: {result.pick}"
    else:
        head = f"- Recommended: average of epochs {fmt_window(result.pick)}"
    lines = [f"[Module: {module_title(group)}]", head, "- Reasons:"]
    seen: list[str] = [result.coupling_note] if result.coupling_note else []
    for reason in final.reasons:
        if reason not in seen:
            seen.append(reason)
    health = result.recommendations.get("gradient_health")
    # its verdict (degradation, or healthy throughout, and from which signals) and gradient stability
    seen += [reason for reason in (health.reasons[:2] if health else []) if reason not in seen]
    lines += [f"  {i}. {reason}" for i, reason in enumerate(seen, 1)]
    if result.moved:
        lines.append(f"- Confidence: not rated for {pick_label(result.pick)} ({confidence_text(result)})")
    else:
        lines.append(f"- Confidence: {round(final.confidence * 100)}%")
    return "\n".join(lines)


def report_markdown(analysis: RunAnalysis) -> str:
    """``analysis_report.md``: one block per group, then a table of every technique's pick."""
    parts = [f"# Sweet-spot analysis of {analysis.source}", ""]
    parts.append(f"Spec `{analysis.spec_name}`, {len(analysis.epochs)} checkpoints (epochs {analysis.epochs[0]}-{analysis.epochs[-1]}).")
    parts.append(f"Thresholds: `{json.dumps(analysis.thresholds.to_json())}`")
    parts.append("")
    parts.append("```")
    parts.append("\n\n".join(group_block(g, r) for g, r in analysis.groups.items()))
    parts.append("```")
    parts.append("")
    names = list(next(iter(analysis.groups.values())).recommendations)
    parts.append("| group | " + " | ".join(names) + " | pick | plateau window |")
    parts.append("|" + " --- |" * (len(names) + 3))
    for group, result in analysis.groups.items():
        cells = []
        for name in names:
            rec = result.recommendations[name]
            text = f"avg {fmt_window(rec.average)}" if rec.average else str(rec.epoch)
            abstains = rec.confidence <= 0 and name != "ensemble"
            cells.append("abstains" if abstains else f"{text} ({rec.confidence:.0%})")
        pick = str(result.pick) if isinstance(result.pick, int) else f"avg {fmt_window(result.pick)}"
        if result.moved:
            pick += f" (moved by {', '.join(result.moved_by)} from {pick_label(result.ensemble_pick)})"
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
