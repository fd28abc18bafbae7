"""Search settings: typed and checked once, where the user hands them over."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from search.algorithms import ALGORITHMS, Algorithm, check_algo
from search.algorithms.chain import members_of

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
    num_samples: int = Field(200, ge=1, description="trials of the algorithm; the baselines (analysis pick, last epoch, every single epoch, the greedy soup) come on top")
    #: An algorithm instance the caller built (``search(..., algorithm=TPE(startup_trials=20))``);
    #: its name and settings are recorded as ``algo`` and ``algo_params`` (validated first, so they see it).
    algorithm: Any = Field(None, exclude=True)
    algo: str = "tpe"
    #: The algorithm's own settings (its ``Params``), e.g. ``{"sweeps": 5}`` for module-soup.
    algo_params: dict[str, Any] = Field(default_factory=dict)
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
    seed: int = 0

    @field_validator("algorithm")
    @classmethod
    def _an_algorithm(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, Algorithm):
            raise ValueError(f"is a {type(value).__name__}; pass an instance of an Algorithm subclass (e.g. sweetspot.TPE())")
        return value

    @field_validator("algo")
    @classmethod
    def _known_algo(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("algorithm") is None:
            members_of(value, ALGORITHMS)  # a SearchError is a ValueError: pydantic reports it
        return value

    @field_validator("algo_params")
    @classmethod
    def _algo_settings(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        algo = info.data.get("algo")
        if info.data.get("algorithm") is None and algo is not None:
            check_algo(algo, value)  # a bad setting is refused here, at the edge
        return value

    @classmethod
    def with_algorithm(cls, algorithm: Algorithm, **fields: Any) -> SearchConfig:
        """Settings that run ``algorithm`` (an instance), recording its name and settings."""
        return cls(**fields, algo=algorithm.name, algo_params=algorithm.params.model_dump(mode="json"), algorithm=algorithm)

    @field_validator("pool_memory", "prefix_cache_memory", mode="before")
    @classmethod
    def _size(cls, value: object) -> int:
        return parse_size(value)  # type: ignore[arg-type]
