"""The candidates a combination is compared against, as epoch sets over a run directory."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.combine.soups import EpochSet, lawa, plateau_average, same_epochs, uniform_soup
from modules.errors import EvaluationError
from modules.rundir.run_dir import RunDir
from modules.spec.selection import (
    ANALYSIS_METRICS_FILE,
    ANALYSIS_SELECTION_FILE,
    Selection,
    analysis_picks,
)

#: Single epochs compared by default, as in the seed's phase 4.1.
DEFAULT_SINGLE_EPOCHS = (30, 40, 50)
LAWA_LAST = 5


@dataclass
class Candidate:
    """A model to evaluate: an epoch set over the run, or a file; ``recompute_bn`` for averages."""

    name: str
    kind: str
    epochs: EpochSet | None = None
    model_path: Path | None = None
    recompute_bn: bool = False
    notes: list[str] = field(default_factory=list)
    #: For a model file: the provenance ``sweetspot combine`` stored in it (None when it has none).
    provenance: dict[str, Any] | None = None
    #: Names of the other candidates that are the same weights (evaluated once, under this one).
    aliases: list[str] = field(default_factory=list)
    #: The kinds of the duplicates merged into this one (e.g. "greedy" when the soup kept one epoch).
    alias_kinds: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "same_weights_as": self.aliases,
            "kind": self.kind,
            "epochs": self.epochs,
            "model_path": str(self.model_path) if self.model_path else None,
            "recompute_bn": self.recompute_bn,
            "notes": self.notes,
        }


@dataclass
class AnalysisInfo:
    """What combine and evaluate need from an analysis: each group's pick and plateau window."""

    picks: Selection
    plateau_windows: dict[str, tuple[int, int] | None]
    source: str


def weights_key(candidate: Candidate, run: RunDir) -> str:
    """What determines a candidate's weights: its epoch set per group (a combined file: the epochs its
    provenance names in this run, when it recorded them) and whether BatchNorm is recomputed."""
    epochs = candidate.epochs
    if epochs is None:
        epochs = _provenance_epochs(candidate.provenance, run)
    if epochs is None:
        return json.dumps(["file", str(candidate.model_path), candidate.recompute_bn])
    return json.dumps([{g: sorted(e) for g, e in epochs.items()}, candidate.recompute_bn], sort_keys=True)


def _provenance_epochs(provenance: dict[str, Any] | None, run: RunDir) -> EpochSet | None:
    if not provenance or provenance.get("update_bn") or not provenance.get("run_dir"):
        return None
    if not run.same_run(provenance["run_dir"]):
        return None
    sources = provenance.get("sources") or {}
    try:
        epochs = {g: [int(s["epoch"]) for s in items] for g, items in sources.items()}
    except (TypeError, KeyError, ValueError):
        return None
    return epochs if set(epochs) == set(run.groups) else None


def deduplicate(candidates: list[Candidate], run: RunDir) -> list[Candidate]:
    """The candidates with distinct weights, in order; a later duplicate's name goes to ``aliases`` of the
    first (``epoch 12`` and ``last epoch (12)`` on a 12-epoch run are one model, evaluated once)."""
    kept: dict[str, Candidate] = {}
    for candidate in candidates:
        key = weights_key(candidate, run)
        if key in kept:
            kept[key].aliases.append(candidate.name)
            kept[key].alias_kinds.append(candidate.kind)
        else:
            kept[key] = candidate
    for candidate in kept.values():
        if candidate.aliases:  # every table, plot and headline then says which names it carries
            candidate.name = " = ".join([candidate.name, *candidate.aliases])
    return list(kept.values())


def nearest_recorded(recorded: list[int], wanted: int) -> int:
    """The recorded epoch closest to ``wanted`` (the earlier one on a tie)."""
    return min(recorded, key=lambda e: (abs(e - wanted), e))


def is_average(epochs: EpochSet) -> bool:
    return any(len(v) > 1 for v in epochs.values())


def single_epoch_candidates(run: RunDir, wanted: list[int]) -> list[Candidate]:
    """One candidate per wanted epoch, moved to the nearest recorded one; every wanted epoch that is not
    recorded is noted with the epoch it maps to (30, 40 and 50 on a 15-epoch run all name 15)."""
    by_got: dict[int, list[int]] = {}
    for epoch in wanted:
        by_got.setdefault(nearest_recorded(run.epochs, epoch), []).append(epoch)
    out = []
    for got, epochs in by_got.items():
        missing = sorted({e for e in epochs if e != got})
        notes = []
        if len(missing) == 1:
            notes.append(f"epoch {missing[0]} not recorded; nearest recorded is {got}")
        elif missing:
            listed = ", ".join(str(e) for e in missing[:-1]) + f" and {missing[-1]}"
            notes.append(f"epochs {listed} not recorded; the nearest recorded for each is {got} (evaluated once)")
        out.append(Candidate(f"epoch {got}", "single", same_epochs(run, [got]), notes=notes))
    return out


def averaged_candidates(run: RunDir, analysis: AnalysisInfo | None, has_bn: bool) -> tuple[list[Candidate], list[str]]:
    """Last epoch, plateau average (when an analysis is at hand), uniform soup and LAWA."""
    notes = []
    last = run.epochs[-1]
    out = [Candidate(f"last epoch ({last})", "last", same_epochs(run, [last]))]
    if analysis is None:
        notes.append("plateau average skipped: no analysis given and none could be computed")
    else:
        fallback = {g: analysis.picks.epochs_for(g, run.epochs) for g in run.groups if g in analysis.picks.root}
        epochs, fell_back = plateau_average(run, analysis.plateau_windows, fallback)
        out.append(Candidate("plateau average", "plateau", epochs, recompute_bn=has_bn and is_average(epochs), notes=fell_back))
    out.append(Candidate(f"uniform soup ({len(run.epochs)})", "uniform", uniform_soup(run), recompute_bn=has_bn))
    out.append(Candidate(f"LAWA (last {min(LAWA_LAST, len(run.epochs))})", "lawa", lawa(run, LAWA_LAST), recompute_bn=has_bn))
    return out, notes


def read_analysis_dir(folder: str | os.PathLike[str]) -> AnalysisInfo:
    """Picks and plateau windows from ``module_metrics.json``, or picks alone from ``selection.json``."""
    folder = Path(folder)
    picks = analysis_picks(folder)
    metrics_path = folder / ANALYSIS_METRICS_FILE
    if not metrics_path.is_file():
        return AnalysisInfo(picks, {}, str(folder / ANALYSIS_SELECTION_FILE))
    groups = json.loads(metrics_path.read_text(encoding="utf-8"))["groups"]  # checked by analysis_picks
    try:
        windows = {g: (tuple(v["plateau_window"]) if v.get("plateau_window") else None) for g, v in groups.items()}
    except (TypeError, AttributeError) as error:
        raise EvaluationError(
            f"{metrics_path} has a malformed groups.<group>.plateau_window ({error!r}); re-run `sweetspot analyze`"
        ) from None
    return AnalysisInfo(picks, windows, str(metrics_path))  # type: ignore[arg-type]


def analysis_for(run: RunDir, folder: str | os.PathLike[str] | None, spec: Any = None) -> tuple[AnalysisInfo | None, str]:
    """The analysis from ``folder`` when given, else computed with ``analysis.pipeline``; with a note."""
    if folder is not None:
        info = read_analysis_dir(folder)
        return info, f"analysis read from {info.source}"
    try:
        from analysis.pipeline import analyze_run
    except ImportError as error:
        return None, f"analysis not available ({error})"
    try:
        result = analyze_run(run, spec)
    except Exception as error:  # noqa: BLE001 - any analysis failure only skips one baseline
        return None, f"analysis of {run.label} failed ({error}); plateau average skipped"
    windows = {g: a.plateau_window for g, a in result.groups.items()}
    return AnalysisInfo(result.selection, windows, f"analyze_run({run.label})"), "analysis computed from the run"
