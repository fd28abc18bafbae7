"""Score selections with one resident model: copy in only the groups whose choice changed,
recompute stale BatchNorm statistics as ``combine --update-bn`` would (kept per choice of the
groups they depend on, so a repeated backbone choice costs a copy, not a pass over the train
split), and cache the output of prefix modules (e.g. a backbone) per choice so trials that
change only later groups skip it.

Nothing here imports Ray: weights arrive through ``fetch(group, epoch)``, which the search backs
with the per-node checkpoint pool and tests back with a run directory.
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from modules.combine.batchnorm import batchnorm_layers, forward_order, stale_layers, update_bn
from modules.errors import EvaluationError
from modules.scalars import as_scalar
from modules.spec.selection import EpochSet

#: Recomputed BatchNorm statistics kept per worker (a few KB per choice for most models).
BN_CACHE_BYTES = 256 << 20
Arrays = Mapping[str, Any]  # numpy arrays (from the object store) or tensors
Fetch = Callable[[str, int], Arrays]
#: Several (group, epoch) at once, in order: one round trip to a store instead of one per group.
FetchMany = Callable[[list[tuple[str, int]]], list[Arrays]]


def as_tensor(value: Any) -> torch.Tensor:
    """A tensor view of an array from the object store (read-only numpy: no copy is made)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple):  # (int16 array, "bfloat16"): a dtype numpy lacks, as its bits
        array, dtype = value
        return torch.from_numpy(np.asarray(array)).view(getattr(torch, dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only array: we only read from it
        return torch.from_numpy(value)


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass
class ScorerStats:
    """Counters a trial reports: what was copied, recomputed and served from the prefix cache."""

    groups_copied: int = 0
    bn_recomputes: int = 0
    bn_hits: int = 0
    prefix_hits: int = 0
    prefix_misses: int = 0
    seconds_loading: float = 0.0
    seconds_scoring: float = 0.0

    def snapshot(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class _TensorCache:
    """Least recently used tensors (and their tuples, lists and mappings), bounded in bytes."""

    capacity_bytes: int
    entries: OrderedDict[tuple, Any] = field(default_factory=OrderedDict)
    nbytes: int = 0

    def get(self, key: tuple) -> Any:
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key][0]
        return None

    def put(self, key: tuple, value: Any) -> None:
        size = sum(t.nbytes for t in _tensors_in(value))
        if size > self.capacity_bytes:
            return
        self.entries[key] = (value, size)
        self.nbytes += size
        while self.nbytes > self.capacity_bytes:
            _, (_, dropped) = self.entries.popitem(last=False)
            self.nbytes -= dropped


def _tensors_in(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _tensors_in(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors_in(v)


def _clone(value: Any) -> Any:
    """A copy of a module output (tensors, and their tuples, lists and mappings)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, Mapping):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_clone(v) for v in value)
    return value


def _bn_key(order: Sequence[tuple[str, str]], layers: Sequence[str], wanted: Mapping[str, tuple[int, ...]]) -> tuple:
    """What recomputed statistics of ``layers`` depend on: the choice of every group that runs up
    to the last call of any of them (their inputs and their own weights), besides the batches."""
    last = max(i for i, (name, _) in enumerate(order) if name in layers)
    depends = sorted({group for _, group in order[: last + 1]})
    return (tuple(layers), tuple((group, wanted[group]) for group in depends))


def _fingerprint(args: tuple, kwargs: dict) -> tuple:
    """Shapes and float64 sums of a call's tensors: a cheap check that a cached call is this one."""
    return tuple((tuple(t.shape), str(t.dtype), float(t.double().sum())) for t in _tensors_in((args, kwargs)))


class SelectionScorer:
    """One model on one device, loaded selection by selection and scored on named splits."""

    def __init__(
        self,
        model: nn.Module,
        key_groups: Mapping[str, str],
        fetch: Fetch,
        evaluate: Callable[[nn.Module, Any], Mapping[str, Any]],
        objective: str,
        train_batches: Callable[[], Iterable[Any]] | None = None,
        update_bn: bool = True,
        prefix_modules: Sequence[str] = (),
        prefix_cache_bytes: int = 1 << 30,
        bn_cache_bytes: int = BN_CACHE_BYTES,
        fetch_many: FetchMany | None = None,
    ) -> None:
        """``fetch`` gives one group-epoch's arrays; ``fetch_many``, when given, those of every group a
        load changes in one call (for a store whose arrays cost no copy to hold, such as Ray's)."""
        self.model = model.eval()
        self.key_groups = dict(key_groups)
        self.fetch = fetch
        self.fetch_many = fetch_many
        self.evaluate = evaluate
        self.objective = objective
        self.train_batches = train_batches
        self.stats = ScorerStats()
        self._state = model.state_dict(keep_vars=True)
        missing = [k for k in self._state if k not in self.key_groups]
        if missing:
            raise EvaluationError(f"the model has keys the run does not record: {missing[:5]}")
        self._group_keys: dict[str, list[str]] = {}
        for key, group in self.key_groups.items():
            self._group_keys.setdefault(group, []).append(key)
        self._loaded: dict[str, tuple[int, ...]] = {}
        self._bn_layers = batchnorm_layers(model)
        self.update_bn = bool(update_bn and self._bn_layers and train_batches is not None)
        self._order: list[tuple[str, str]] | None = None
        #: BatchNorm layers whose statistics were recomputed: their group no longer equals its files.
        self._touched_groups: set[str] = set()
        self._prefix_names = list(prefix_modules)
        #: Prefix outputs per (module, split, call, choice of the groups it depends on, input).
        self._prefix_cache = _TensorCache(prefix_cache_bytes)
        #: Recomputed BatchNorm statistics per (layers, choice of the groups that run up to them).
        self._bn_cache = _TensorCache(bn_cache_bytes)
        if self._prefix_names and train_batches is None:
            raise EvaluationError(
                "a prefix module's cache needs the spec's batches callable (one batch tells which groups"
                " run before the prefix); add `batches:` to the spec or drop --prefix-module"
            )
        unknown = [n for n in self._prefix_names if n not in dict(model.named_modules())]
        if unknown:
            raise EvaluationError(
                f"prefix module(s) {unknown} are not modules of the model; name a submodule such as"
                f" {[n for n, _ in model.named_children()][:5]}"
            )

    # -- loading ----------------------------------------------------------------------------

    def load(self, epochs: EpochSet) -> list[str]:
        """Make the model hold ``epochs`` (group -> recorded epochs averaged); returns the groups
        copied in (those whose choice changed, or whose BatchNorm statistics were recomputed)."""
        start = time.perf_counter()
        wanted = {g: tuple(sorted(int(e) for e in epochs[g])) for g in self._group_keys}
        changed = [g for g in self._group_keys if self._loaded.get(g) != wanted[g] or g in self._touched_groups]
        needed = [(g, e) for g in changed for e in wanted[g]]
        fetch = self.fetch
        if self.fetch_many is not None and needed:
            fetched = dict(zip(needed, self.fetch_many(needed), strict=True))

            def fetch(group: str, epoch: int) -> Arrays:  # each let go once copied in
                arrays = fetched.pop((group, epoch), None)
                return arrays if arrays is not None else self.fetch(group, epoch)

        with torch.no_grad():
            for group in changed:
                self._copy_group(group, [fetch(group, e) for e in wanted[group]])
                self._loaded[group] = wanted[group]
                self._touched_groups.discard(group)
        self.stats.groups_copied += len(changed)
        if self.update_bn:
            order = self._forward_order()
            layers = stale_layers(order, self._bn_layers, wanted)
            if layers:
                self._recompute_bn(layers, _bn_key(order, layers, wanted))
                self._touched_groups.update(self.key_groups[f"{name}.running_mean"] for name in layers)
        self.stats.seconds_loading += time.perf_counter() - start
        return changed

    def _recompute_bn(self, layers: list[str], key: tuple) -> None:
        """The statistics ``update_bn`` gives ``layers``: from the cache when the groups they depend
        on were chosen the same before (the train batches are the same every time)."""
        cached = self._bn_cache.get(key)
        if cached is not None:
            for name, (mean, var) in cached.items():
                self._bn_layers[name].running_mean.copy_(mean)
                self._bn_layers[name].running_var.copy_(var)
            self.stats.bn_hits += 1
            return
        update_bn(self.model, self.train_batches(), "the train split", layers)
        self.stats.bn_recomputes += 1
        self._bn_cache.put(key, {n: (self._bn_layers[n].running_mean.clone(), self._bn_layers[n].running_var.clone()) for n in layers})

    def _copy_group(self, group: str, sources: list[Arrays]) -> None:
        for key in self._group_keys[group]:
            target = self._state[key]
            if len(sources) == 1 or not target.dtype.is_floating_point:
                target.copy_(as_tensor(sources[-1][key]))
                continue
            # The same float32 running mean as combine, so scores equal the handed-over model's.
            total = as_tensor(sources[0][key]).to(_wide(target.dtype), copy=True)
            for source in sources[1:]:
                total.add_(as_tensor(source[key]))
            target.copy_(total.div_(len(sources)).to(target.dtype))

    def _forward_order(self) -> list[tuple[str, str]]:
        if self._order is None:
            assert self.train_batches is not None
            first = next(iter(self.train_batches()), None)
            if first is None:
                raise EvaluationError("the train split yielded no batches, so BatchNorm statistics cannot be recomputed")
            self._order = forward_order(self.model, self.key_groups, first)
        return self._order

    # -- scoring ----------------------------------------------------------------------------

    def score(self, split: Any, split_name: str) -> dict[str, float]:
        """Scalar metrics of the loaded model on ``split`` (the objective included)."""
        start = time.perf_counter()
        with self._prefix_active(split_name):
            raw = self.evaluate(self.model, split)
        self.model.eval()
        if not isinstance(raw, Mapping) or self.objective not in raw:
            found = sorted(raw) if isinstance(raw, Mapping) else type(raw).__name__
            raise EvaluationError(
                f"the evaluate callable returned {found} without the objective {self.objective!r};"
                " return it or fix objective.metric in the spec"
            )
        metrics = {k: s for k, v in raw.items() if (s := as_scalar(v)) is not None}
        self.stats.seconds_scoring += time.perf_counter() - start
        return metrics

    def _prefix_active(self, split_name: str) -> Any:
        return _PrefixPatch(self, split_name) if self._prefix_names else _NoPatch()

    def _prefix_key_groups(self, module_name: str) -> tuple[str, ...]:
        """The groups a prefix module's output depends on: its own and every group that runs before it."""
        inside = {g for k, g in self.key_groups.items() if k.startswith(f"{module_name}.")}
        order = self._order or []
        first = next((i for i, (name, _) in enumerate(order) if name == module_name or name.startswith(f"{module_name}.")), None)
        upstream = {g for _, g in order[:first]} if first is not None else set(self._group_keys)
        return tuple(sorted(inside | upstream))


class _NoPatch:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _PrefixPatch:
    """While active, each prefix module answers repeated calls from the cache."""

    def __init__(self, scorer: SelectionScorer, split_name: str) -> None:
        self.scorer = scorer
        self.split_name = split_name
        self.modules = dict(scorer.model.named_modules())

    def __enter__(self) -> None:
        scorer = self.scorer
        if scorer._order is None:
            scorer._forward_order()
        for name in scorer._prefix_names:
            module = self.modules[name]
            depends = scorer._prefix_key_groups(name)
            choice = tuple(scorer._loaded.get(g) for g in depends)
            calls = iter(range(1 << 62))
            original = module.forward

            def cached(*args: Any, _name: str = name, _original: Any = original, _choice: tuple = choice,
                       _calls: Any = calls, _module: nn.Module = module, **kwargs: Any) -> Any:
                if _module.training or torch.is_grad_enabled():
                    return _original(*args, **kwargs)
                key = (_name, self.split_name, next(_calls), _choice, _fingerprint(args, kwargs))
                hit = scorer._prefix_cache.get(key)
                if hit is not None:
                    scorer.stats.prefix_hits += 1
                    return _clone(hit)  # the caller may change its input in place
                scorer.stats.prefix_misses += 1
                output = _original(*args, **kwargs)
                scorer._prefix_cache.put(key, _clone(output))
                return output

            module.forward = cached  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        for name in self.scorer._prefix_names:
            self.modules[name].__dict__.pop("forward", None)
