"""The validation split cut into a search part (in shards) and a held-back confirm part."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from modules.errors import SweetspotError


class SplitError(SweetspotError, ValueError):
    """A split cannot be cut (no length, or no way to take a subset of it)."""


def split_length(split: Any, name: str) -> int:
    """Examples in a split: ``len(split)``, or the length of its tensors for tuples and mappings."""
    if isinstance(split, Mapping) and split and all(isinstance(v, torch.Tensor) for v in split.values()):
        return len(next(iter(split.values())))
    if isinstance(split, (tuple, list)) and split and all(isinstance(v, torch.Tensor) for v in split):
        return len(split[0])
    try:
        return len(split)
    except TypeError:
        raise SplitError(
            f"the {name} split ({type(split).__name__}) has no len(); the search cuts validation into"
            " a search and a confirm part and into shards, so give the split __len__ and subset(index)"
            " (or use --confirm-fraction 0 --shards 1)"
        ) from None


def subset(split: Any, index: torch.Tensor, name: str = "val") -> Any:
    """The examples of ``split`` at ``index``: ``split.subset(index)``, or tensors and their
    tuples, lists and mappings indexed along the first dimension, or a torch ``Subset``."""
    if hasattr(split, "subset"):
        return split.subset(index)
    if isinstance(split, torch.Tensor):
        return split[index]
    if isinstance(split, Mapping):
        return {k: subset(v, index, name) for k, v in split.items()}
    if isinstance(split, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in split):
        return type(split)(v[index] for v in split)
    if isinstance(split, torch.utils.data.Dataset):
        return torch.utils.data.Subset(split, index.tolist())
    raise SplitError(
        f"cannot take a subset of the {name} split ({type(split).__name__}); give it a"
        " subset(index) method returning the examples at a LongTensor index, or use"
        " --confirm-fraction 0 --shards 1"
    )


@dataclass
class SearchSplits:
    """What a trial scores on: the search part of validation (whole and in shards), the confirm
    part (None with confirm fraction 0) and the train split (for BatchNorm statistics)."""

    search: Any
    shards: list[Any]
    shard_sizes: list[int]
    confirm: Any | None
    train: Any
    search_size: int
    confirm_size: int


def cut_validation(
    val: Any, train: Any, confirm_fraction: float, shards: int, seed: int
) -> SearchSplits:
    """A fixed, seeded cut: ``confirm_fraction`` of validation held back, the rest in ``shards``."""
    if confirm_fraction == 0 and shards == 1:
        n = split_length(val, "val") if hasattr(val, "__len__") or isinstance(val, (tuple, list, Mapping)) else 0
        return SearchSplits(val, [val], [n], None, train, n, 0)
    n = split_length(val, "val")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    n_confirm = int(round(confirm_fraction * n))
    if confirm_fraction > 0 and (n_confirm < 1 or n - n_confirm < shards):
        raise SplitError(
            f"the val split has {n} examples: too few to hold back {confirm_fraction:.0%} for"
            f" confirmation and cut the rest into {shards} shards; lower --confirm-fraction or --shards"
        )
    confirm_index = order[:n_confirm].sort().values
    search_index = order[n_confirm:].sort().values
    search = subset(val, search_index) if n_confirm else val
    parts = [part for part in torch.tensor_split(search_index, shards) if len(part)]
    shard_splits = [subset(val, part) for part in parts] if shards > 1 else [search]
    confirm = subset(val, confirm_index) if n_confirm else None
    return SearchSplits(
        search, shard_splits, [len(p) for p in parts], confirm, train, len(search_index), n_confirm
    )


def weighted_mean(values: Sequence[Mapping[str, float]], sizes: Sequence[int]) -> dict[str, float]:
    """Size-weighted mean of per-shard metrics (exact for means over examples)."""
    total = sum(sizes)
    keys = [k for k in values[0] if all(k in v for v in values)]
    return {k: sum(v[k] * n for v, n in zip(values, sizes)) / total for k in keys}
