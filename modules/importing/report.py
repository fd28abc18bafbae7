"""What an import did, for people and for callers: epochs written, files and extras skipped, metric problems."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Metrics files an import reads from the checkpoint folder (one row per epoch).
METRICS_FILES = ("metrics.csv", "metrics.jsonl")


@dataclass(frozen=True)
class SkippedFile:
    """A checkpoint left out by ``skip_bad``, with the reason."""

    path: str
    reason: str


@dataclass(frozen=True)
class MetricProblem:
    """Values of one metrics column that were kept as missing (NaN)."""

    file: str
    column: str
    kind: str  # "non-numeric" or "missing"
    epochs: list[int]
    examples: list[str] = field(default_factory=list)

    def describe(self) -> str:
        shown = ", ".join(repr(v) for v in self.examples)
        values = f" (values {shown})" if shown else ""
        return f"{self.file}: column {self.column!r} has {self.kind} values at epochs {self.epochs}{values}; kept as missing"


@dataclass
class ImportReport:
    """What an import did: epochs written, files skipped, metric values kept as missing."""

    source: str
    out: str
    #: The layout read (``modules.importing.layouts``) and what the run's numbers count ("epoch" or "step").
    layout: str = "seed"
    index: str = "epoch"
    #: What the layout noticed: checkpoints a save limit deleted, metrics that are missing.
    notes: list[str] = field(default_factory=list)
    #: Keys outside ``strip_prefix`` that were left out.
    left_out_keys: list[str] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    metrics_file: str | None = None
    metric_rows: int = 0
    metric_problems: list[MetricProblem] = field(default_factory=list)
    #: Columns like ``backbon/grad_norm`` whose prefix looks like a misspelt group: (column, likely group).
    metric_near_groups: list[tuple[str, str]] = field(default_factory=list)
    #: Epochs of metrics rows with no checkpoint: stored, but the analysis reads checkpoint epochs only.
    metric_epochs_without_checkpoint: list[int] = field(default_factory=list)
    total_bytes: int = 0
    #: Globals of checkpoint extras (hyper-parameters, numpy scalars, ...) left unloaded -> files holding them.
    skipped_globals: dict[str, list[str]] = field(default_factory=dict)
    #: Temporary folders of an earlier, killed import into the same ``out`` that were removed.
    removed_leftovers: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for people: what was imported, what was skipped, what was missing."""
        lines = [
            f"imported {len(self.epochs)} {self.index}s {self.epochs} from {self.source} ({self.layout} layout)"
            f" into {self.out}"
        ]
        lines.extend(self.notes)
        if self.left_out_keys:
            lines.append(
                f"left out {len(self.left_out_keys)} keys outside --strip-prefix, such as {self.left_out_keys[:5]}"
            )
        for item in self.skipped:
            lines.append(f"skipped {item.path}: {item.reason}")
        for name, files in self.skipped_globals.items():
            shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
            lines.append(
                f"left out non-tensor entries of type {name} in {shown}: not loaded and no code run"
                " (allow the type with --allow-global if you need it read)"
            )
        for path in self.removed_leftovers:
            lines.append(f"removed {path}, left by an earlier import that was interrupted")
        if self.metrics_file:
            lines.append(f"metrics: {self.metric_rows} values from {self.metrics_file}")
        elif not any(note.startswith("metrics:") for note in self.notes):
            lines.append(f"metrics: none ({' or '.join(METRICS_FILES)} not found in {self.source})")
        lines.extend(problem.describe() for problem in self.metric_problems)
        for column, group in self.metric_near_groups:
            prefix, _, metric = column.partition("/")
            lines.append(
                f"{self.metrics_file}: column {column!r}: {prefix!r} is not a group of the spec but looks like"
                f" group {group!r}; it was imported as a whole-model metric. Rename the column to"
                f" '{group}/{metric}' (or fix the spec's group name) and import again to attach it to {group!r}"
            )
        orphans = self.metric_epochs_without_checkpoint
        if orphans:
            shown = ", ".join(map(str, orphans[:10])) + (f" and {len(orphans) - 10} more" if len(orphans) > 10 else "")
            lines.append(
                f"{self.metrics_file}: rows for {len(orphans)} {self.index}{'s' if len(orphans) != 1 else ''} without a"
                f" checkpoint ({shown}) are stored but not analysed: the analysis reads metrics at checkpoint"
                f" {self.index}s only"
            )
        return "\n".join(lines)


