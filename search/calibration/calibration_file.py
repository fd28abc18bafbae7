"""What a search teaches about a model, in a form that carries over to its other trainings.

Per-epoch metrics cannot see how groups from different epochs work together, so the thresholds
alone do not reproduce a search. What does carry over between trainings of one model is where
each group's good choices lie in the course of training, how much the objective cares about each
group, and whether averaging a group's neighbouring checkpoints helps. ``fit_priors`` measures
that on a searched run, around the search's pick: a profile of each group over the recorded
epochs with the other groups held at the pick, and two averaging widths per group. The priors
are positions as fractions of training (0 = first checkpoint, 1 = last), so a run of another
length maps them onto its own checkpoints.

The calibration file (``calibration.json``, format ``sweetspot-calibration`` version 1) holds the
thresholds, the priors per group and the runs they were fitted on. Nothing here imports Ray.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from analysis.thresholds import Thresholds
from modules.atomic import write_json_atomic
from modules.errors import SweetspotError
from modules.spec.schema import loss_sign
from modules.spec.selection import EpochSet

FORMAT = "sweetspot-calibration"
VERSION = 1
CALIBRATION_NAME = "calibration.json"
#: A group's good region: epochs whose profile lies within this share of the way from its best
#: value to its median value.
GOOD_SHARE = 0.25
#: Averaging widths (checkpoints, centred) tried per group while fitting.
AVERAGE_WIDTHS = (3, 5)

#: Scores a selection (group -> epochs averaged); None once no evaluation is left.
Score = Callable[[EpochSet], "float | None"]


class CalibrationFileError(SweetspotError, ValueError):
    """A calibration file is missing, unreadable, of another format, or does not fit the runs."""


class GroupPrior(BaseModel):
    """Where a group's good choices lie (fractions of training) and how much it matters."""

    model_config = ConfigDict(extra="forbid")

    centre: float = Field(ge=0.0, le=1.0, description="the search's choice, as a fraction of training")
    low: float = Field(ge=0.0, le=1.0, description="start of the good region, fraction of training")
    high: float = Field(ge=0.0, le=1.0, description="end of the good region, fraction of training")
    sensitivity: float = Field(ge=0.0, description="median profile value over the best, relative")
    average: int = Field(ge=1, description="checkpoints averaged in the best window (1: a single epoch)")

    @model_validator(mode="after")
    def _ordered(self) -> GroupPrior:
        if not self.low <= self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        return self


class FittedRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: str
    search: str
    manifest_sha256: str
    checkpoints: int


class Calibration(BaseModel):
    """The calibration file: thresholds for the analysis, priors per group for the refinement."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["sweetspot-calibration"] = FORMAT
    version: Literal[1] = VERSION
    objective: dict[str, str]
    groups: list[str]
    thresholds: Thresholds
    priors: dict[str, GroupPrior]
    fitted_on: list[FittedRun]

    @model_validator(mode="after")
    def _every_group(self) -> Calibration:
        if set(self.priors) != set(self.groups):
            raise ValueError(f"priors name groups {sorted(self.priors)} but groups are {sorted(self.groups)}")
        return self

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    def check_groups(self, groups: Sequence[str], where: str) -> None:
        """Refuse a run whose groups are not the ones the calibration was fitted on."""
        if set(groups) != set(self.groups):
            raise CalibrationFileError(
                f"{where} has groups {list(groups)} but the calibration was fitted on a model with groups"
                f" {self.groups}; calibrate on searched runs of this model (sweetspot calibrate)"
            )

    def write(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        write_json_atomic(path, json.loads(self.model_dump_json()))
        return path


def load_calibration(path: str | os.PathLike[str]) -> Calibration:
    """Read and validate a calibration file; errors name the file, the key and the fix."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationFileError(
            f"calibration file {path} does not exist; pass the {CALIBRATION_NAME} that `sweetspot calibrate` wrote"
            " beside its thresholds"
        ) from None
    except (OSError, ValueError) as error:
        raise CalibrationFileError(f"calibration file {path} is unreadable ({error}); calibrate again") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CalibrationFileError(
            f"{path} is not a sweetspot calibration file (no \"format\": \"{FORMAT}\"); a thresholds file goes to"
            " --thresholds, the calibration.json written beside it to --calibration"
        )
    if raw.get("version") != VERSION:
        raise CalibrationFileError(
            f"{path} has calibration format version {raw.get('version')!r}; this sweetspot reads version {VERSION}:"
            " calibrate again with this version"
        )
    try:
        return Calibration.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise CalibrationFileError(f"calibration file {path}: {key}: {first['msg']}; calibrate again") from None


# -- positions ----------------------------------------------------------------------------------


def fraction(index: int, count: int) -> float:
    """Position of the ``index``-th of ``count`` checkpoints in training, 0 to 1."""
    return index / (count - 1) if count > 1 else 0.0


def index_at(position: float, count: int) -> int:
    """The checkpoint nearest to ``position`` (a fraction of training) among ``count``."""
    return min(count - 1, max(0, int(round(position * (count - 1)))))


def window(epochs: Sequence[int], centre_index: int, width: int) -> list[int]:
    """``width`` consecutive checkpoints centred on ``centre_index`` (shifted inside the run)."""
    width = max(1, min(width, len(epochs)))
    first = min(max(0, centre_index - width // 2), len(epochs) - width)
    return list(epochs[first : first + width])


def predicted_selection(priors: Mapping[str, GroupPrior], epochs: Sequence[int]) -> EpochSet:
    """The priors' choice on a run with ``epochs``: each group at its fitted position and width."""
    return {g: window(epochs, index_at(p.centre, len(epochs)), p.average) for g, p in priors.items()}


# -- fitting --------------------------------------------------------------------------------------


def _centre_index(chosen: Sequence[int], epochs: Sequence[int]) -> int:
    indices = [epochs.index(e) for e in chosen]
    return int(round(sum(indices) / len(indices)))


def fit_priors(
    score: Score, epochs: Sequence[int], groups: Sequence[str], pick: Mapping[str, Sequence[int]], mode: str,
    stride: int = 1,
) -> dict[str, GroupPrior]:
    """Priors of each group around ``pick``: its profile over every ``stride``-th recorded epoch
    (other groups at the pick), and whether averaging around the pick helps."""
    epochs = list(epochs)
    sign = loss_sign(mode)
    base = {g: sorted(int(e) for e in pick[g]) for g in groups}
    base_value = score(base)
    if base_value is None:
        raise CalibrationFileError("no evaluation left to score the search's pick")
    priors: dict[str, GroupPrior] = {}
    for group in groups:
        centre = _centre_index(base[group], epochs)
        profile: dict[int, float] = {}
        for index in sorted(set(range(0, len(epochs), stride)) | {centre}):
            value = score({**base, group: [epochs[index]]})
            if value is not None:
                profile[index] = sign * value
        best, median = min(profile.values()), statistics.median(profile.values())
        cut = best + GOOD_SHARE * (median - best)
        good = [i for i, v in profile.items() if v <= cut] + [centre]
        width, width_value = len(base[group]), sign * base_value
        for candidate in AVERAGE_WIDTHS:
            value = score({**base, group: window(epochs, centre, candidate)})
            if value is not None and sign * value < width_value:
                width, width_value = candidate, sign * value
        scale = abs(best) if best != 0 else 1.0
        priors[group] = GroupPrior(
            centre=fraction(centre, len(epochs)), low=fraction(min(good), len(epochs)),
            high=fraction(max(good), len(epochs)), sensitivity=max(0.0, (median - best) / scale), average=width,
        )
    return priors


def joint_priors(fits: Sequence[Mapping[str, GroupPrior]]) -> dict[str, GroupPrior]:
    """Priors of several fitted runs in one: the median position, the hull of the good regions,
    the mean sensitivity and the commonest averaging width."""
    if len(fits) == 1:
        return dict(fits[0])
    out = {}
    for group in fits[0]:
        each = [f[group] for f in fits]
        out[group] = GroupPrior(
            centre=statistics.median(p.centre for p in each), low=min(p.low for p in each),
            high=max(p.high for p in each), sensitivity=statistics.fmean(p.sensitivity for p in each),
            average=statistics.mode(p.average for p in each),
        )
    return out


def describe_prior(prior: GroupPrior, epochs: Sequence[int]) -> str:
    """A prior on a run's own epochs, e.g. ``epoch 40 (good 34-46), averages 3, sensitivity 4.1%``."""
    n = len(epochs)
    centre, low, high = (epochs[index_at(x, n)] for x in (prior.centre, prior.low, prior.high))
    averaged = f", averages {prior.average}" if prior.average > 1 else ""
    sens = 100 * prior.sensitivity
    return f"epoch {centre} (good {low}-{high}){averaged}, sensitivity {sens:.2g}%" if math.isfinite(sens) else f"epoch {centre}"


__all__ = [
    "CALIBRATION_NAME", "Calibration", "CalibrationFileError", "FittedRun", "GroupPrior", "fit_priors",
    "joint_priors", "load_calibration", "predicted_selection",
]
