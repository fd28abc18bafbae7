"""Write the analysis: ``module_metrics.json``, ``analysis_report.md`` and ``selection.json``.

``module_metrics.json`` (``format_version`` 1; keys below are always present, in this order;
``null`` stands for a missing/NaN value)::

    format_version: 1
    source:         the analysed run (path as given)
    spec:           the spec's name
    epochs:         [checkpoint epochs], ascending; every "per epoch" list below aligns with it
    index:          "epoch", or "step" when the run was saved by optimizer steps (the epochs are steps)
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
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.errors import AnalysisError
from analysis.results import (
    FORMAT_VERSION,
    confidence_text,
    fmt_window,
    module_metrics_json,
    pick_label,
    pick_summary,
)
from modules.atomic import write_json_atomic, write_text_atomic
from modules.spec.selection import save_selection

if TYPE_CHECKING:
    from analysis.results import GroupAnalysis, RunAnalysis

__all__ = [
    "FORMAT_VERSION",
    "METRICS_FILE",
    "REPORT_FILE",
    "SELECTION_FILE",
    "MANIFEST_FILE",
    "VISUALIZATIONS",
    "next_steps",
    "read_manifest",
    "summary_table",
    "confidence_text",
    "group_block",
    "module_metrics_json",
    "pick_label",
    "pick_summary",
    "report_markdown",
    "write_outputs",
]

METRICS_FILE = "module_metrics.json"
REPORT_FILE = "analysis_report.md"
SELECTION_FILE = "selection.json"
VISUALIZATIONS = "visualizations"
#: The files the last analysis wrote into its output folder, so that the next one removes its own
#: stale files (a group's PNG from an earlier spec) and nothing else.
MANIFEST_FILE = ".sweetspot-analysis.json"


def read_manifest(output: Path) -> list[str]:
    """Files an earlier analysis wrote into ``output`` (relative paths); [] for a new folder."""
    path = output / MANIFEST_FILE
    if not path.is_file():
        if (output / METRICS_FILE).exists() or (output / VISUALIZATIONS).is_dir():
            raise AnalysisError(
                f"{output} already holds analysis output without {MANIFEST_FILE} (written by an older"
                " sweetspot or by hand), so its stale files cannot be told from yours; remove the folder"
                " or analyse into a new one"
            )
        return []
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError):
        files = None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise AnalysisError(f"{path} is not a list of the files an analysis wrote; remove it and the files it names")
    # only plain relative names inside the folder, never a path that climbs out of it
    return [f for f in files if not Path(f).is_absolute() and ".." not in Path(f).parts]


def module_title(group: str) -> str:
    """``wrapper_emotion`` -> ``Wrapper Emotion`` (the seed's ``[Module: Backbone]`` form)."""
    return " ".join(part.capitalize() for part in group.replace("-", "_").split("_") if part)


def group_block(group: str, result: GroupAnalysis, index: str = "epoch") -> str:
    """One seed phase 3.2 block: module, recommended epoch (or step), numbered reasons, confidence."""
    final = result.final
    if isinstance(result.pick, int):
        head = f"- Recommended {index}: {result.pick}"
    else:
        head = f"- Recommended: average of {index}s {fmt_window(result.pick)}"
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


def summary_table(analysis: RunAnalysis) -> list[str]:
    """Markdown table: every technique's pick per group, the final pick and the plateau window."""
    first = next(iter(analysis.groups.values()))
    names = list(first.recommendations)
    lines = ["| group | pick | " + " | ".join(names) + " | plateau window |", "|" + " --- |" * (len(names) + 3)]
    for group, result in analysis.groups.items():
        cells = []
        for name in names:
            rec = result.recommendations[name]
            text = f"avg {fmt_window(rec.average)}" if rec.average else str(rec.epoch)
            abstains = rec.confidence <= 0 and name != result.final_technique
            cells.append("abstains" if abstains else f"{text} ({rec.confidence:.0%})")
        pick = f"**{pick_label(result.pick)}** ({confidence_text(result)})"
        lines.append(f"| {group} | {pick} | " + " | ".join(cells) + f" | {fmt_window(result.plateau_window)} |")
    return lines


def next_steps(analysis: RunAnalysis, selection: str | os.PathLike[str] = SELECTION_FILE) -> list[str]:
    """What to run with this analysis: combine its selection (at ``selection``, the path it was
    written to), then evaluate it."""
    path = shlex.quote(str(selection))
    groups = " ".join(f"--group {g}={pick_label(r.pick).replace('average ', '')}" for g, r in analysis.groups.items())
    return [
        "## What to run next",
        "",
        f"Build the model from `{selection}` (or name groups yourself: `{groups}`), then compare it with"
        " the baselines on held-out data:",
        "",
        "```bash",
        f"sweetspot combine --checkpoint-dir {analysis.source} --selection {path} --output combined.safetensors",
        f"sweetspot evaluate --spec sweetspot.yaml --checkpoint-dir {analysis.source} --selection {path}"
        " --output eval/",
        "```",
    ]


def report_markdown(analysis: RunAnalysis, selection: str | os.PathLike[str] = SELECTION_FILE) -> str:
    """``analysis_report.md``: the summary table and what to run next (with ``selection``, the path
    selection.json is written to), then one block per group, then notes."""
    parts = [f"# Sweet-spot analysis of {analysis.source}", ""]
    parts.append(
        f"Spec `{analysis.spec_name}`, {len(analysis.epochs)} checkpoints ({analysis.index}s"
        f" {analysis.epochs[0]}-{analysis.epochs[-1]})."
    )
    if analysis.index == "step":
        parts += ["", "The run was saved by optimizer steps: every epoch number below is a step."]
    parts.append("")
    parts += summary_table(analysis)
    parts.append("")
    parts += next_steps(analysis, selection)
    parts += ["", "## Why each pick", "", "```"]
    parts.append("\n\n".join(group_block(g, r, analysis.index) for g, r in analysis.groups.items()))
    parts += ["```", "", f"Thresholds: `{json.dumps(analysis.thresholds.to_json())}`"]
    if analysis.notes:
        parts += ["", "## Notes", ""] + [f"- {note}" for note in analysis.notes]
    return "\n".join(parts) + "\n"


def write_outputs(analysis: RunAnalysis, output: str | os.PathLike[str], plots: bool = True) -> dict[str, Path]:
    """Write module_metrics.json, analysis_report.md, selection.json (and visualizations/).

    The folder then holds this analysis' files only: files an earlier analysis wrote there
    (listed in its ``.sweetspot-analysis.json``) and this one did not are removed; other files
    are left alone, and a non-empty folder without that list that already holds analysis
    output is refused rather than mixed.
    """
    output = Path(output)
    earlier = read_manifest(output)
    written = {
        "metrics": output / METRICS_FILE,
        "report": output / REPORT_FILE,
        "selection": output / SELECTION_FILE,
    }
    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(written["metrics"], module_metrics_json(analysis))
    write_text_atomic(written["report"], report_markdown(analysis, written["selection"]))
    save_selection(analysis.selection, written["selection"], analysis.index)
    files = [written["metrics"], written["report"], written["selection"]]
    if plots:
        from analysis.plots import write_plots

        written["visualizations"] = output / VISUALIZATIONS
        files += write_plots(analysis, written["visualizations"])
    names = sorted(path.relative_to(output).as_posix() for path in files)
    for stale in sorted(set(earlier) - set(names)):
        (output / stale).unlink(missing_ok=True)
    visualizations = output / VISUALIZATIONS
    if visualizations.is_dir() and not any(visualizations.iterdir()):
        visualizations.rmdir()
    write_json_atomic(output / MANIFEST_FILE, {"format_version": 1, "files": names})
    return written
