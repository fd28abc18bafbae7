"""Search settings: typed and checked once, where the user hands them over."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from search.algorithms import ALGORITHMS

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str | int) -> int:
    """``8GB``, ``512MiB``, ``1.5G`` or a byte count, in bytes."""
    if isinstance(text, int):
        return text
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size; write it like 8GB, 512MB or 1073741824")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


class SearchConfig(BaseModel):
    """Everything ``sweetspot search`` takes besides the run, the spec and the output folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    num_samples: int = Field(200, ge=1, description="trials in all, the baselines included")
    algo: str = "tpe"
    candidates: Literal["all", "analysis"] = "all"
    include_averages: bool = False
    max_half_width: int = Field(2, ge=1, le=10)
    confirm_fraction: float = Field(0.3, ge=0.0, lt=0.9)
    update_bn: bool | None = None
    gpus_per_trial: float = Field(0.0, ge=0.0)
    cpus_per_trial: float = Field(1.0, gt=0.0)
    max_concurrent: int | None = Field(None, ge=1)
    shards: int = Field(4, ge=1, le=64)
    pool_memory: int = Field(8 << 30, gt=0)
    prefix_cache_memory: int = Field(1 << 30, ge=0)
    prefix_modules: tuple[str, ...] = ()
    top_k: int = Field(5, ge=1, le=50)
    baselines: bool = True
    max_failures: int = Field(2, ge=0)
    module_soup_sweeps: int = Field(3, ge=1, le=20)
    seed: int = 0

    @field_validator("algo")
    @classmethod
    def _known_algo(cls, value: str) -> str:
        if value not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {value!r}; choose one of {sorted(ALGORITHMS)}")
        return value

    @field_validator("pool_memory", "prefix_cache_memory", mode="before")
    @classmethod
    def _size(cls, value: object) -> int:
        return parse_size(value)  # type: ignore[arg-type]
