"""Recompute BatchNorm running statistics for combined weights (as torch.optim.swa_utils.update_bn)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from modules.errors import CombineError

if TYPE_CHECKING:
    from modules.combine.plan import CombinePlan


def batchnorm_layers(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers that keep running statistics, by module name."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    }


def has_batchnorm(model: nn.Module) -> bool:
    """True when the model has BatchNorm layers with running statistics."""
    return bool(batchnorm_layers(model))


def to_device(inputs: Any, device: torch.device) -> Any:
    """``inputs`` (a tensor, or tuples, lists and mappings of them) moved to ``device``."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, Mapping):
        return {k: to_device(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(to_device(v, device) for v in inputs)
    return inputs


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(*inputs)`` for tuples/lists, ``model(**inputs)`` for mappings, ``model(inputs)`` otherwise.

    Inputs are moved to the model's device first, so CPU batches serve a model on a GPU.
    """
    inputs = to_device(inputs, model_device(model))
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


@torch.no_grad()
def forward_order(model: nn.Module, key_groups: Mapping[str, str], inputs: Any) -> list[tuple[str, str]]:
    """``(module name, group)`` of each module that owns parameters or buffers, in the order the
    forward pass of ``inputs`` (one batch, in eval mode) calls it."""

    def group_of(name: str, module: nn.Module) -> str | None:
        for key, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            full = f"{name}.{key}" if name else key
            if full in key_groups:
                return key_groups[full]
        return None

    groups = {name: group_of(name, m) for name, m in model.named_modules()}
    order: list[tuple[str, str]] = []
    handles = [
        module.register_forward_pre_hook(lambda _m, _a, name=name: order.append((name, groups[name])))
        for name, module in model.named_modules()
        if groups[name] is not None
    ]
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        call_model(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in was_training.items():
            module.training = mode
    return order


def stale_layers(
    order: list[tuple[str, str]], layers: Collection[str], sources: Mapping[str, tuple[Any, ...]]
) -> list[str]:
    """The BatchNorm ``layers`` whose statistics no longer fit, given the forward ``order``.

    A layer is stale when its group is averaged (more than one source) or when a group that runs
    before it comes from other sources (a crossover).
    """
    stale: list[str] = []
    upstream: set[str] = set()
    for name, group in order:
        if name in layers and name not in stale:
            if len(sources[group]) > 1 or any(sources[g] != sources[group] for g in upstream):
                stale.append(name)
        upstream.add(group)
    return stale


def stale_batchnorm(
    model: nn.Module, key_groups: Mapping[str, str], sources: Mapping[str, tuple[Any, ...]], inputs: Any
) -> list[str]:
    """BatchNorm layers whose statistics no longer fit the combined weights, in forward order
    (see ``stale_layers``); ``inputs`` is one batch that drives the forward pass."""
    layers = batchnorm_layers(model)
    if not layers:
        return []
    return stale_layers(forward_order(model, key_groups, inputs), layers, sources)


@torch.no_grad()
def update_bn(
    model: nn.Module,
    batches: Iterable[Any],
    source: str = "the training split",
    layers: Collection[str] | None = None,
) -> int:
    """Recompute the running mean and variance of BatchNorm ``layers`` (default all) over ``batches``.

    An exact average, as ``torch.optim.swa_utils.update_bn``; other BatchNorm layers run in eval
    mode and keep their statistics. ``num_batches_tracked``, modes and momenta are restored.
    Returns the number of batches seen (0 when there is nothing to recompute).
    """
    every = batchnorm_layers(model)
    chosen = {name: every[name] for name in (every if layers is None else layers)}
    if not chosen:
        return 0
    momenta = {layer: layer.momentum for layer in chosen.values()}
    tracked = {layer: layer.num_batches_tracked.clone() for layer in chosen.values()}
    modes = {m: m.training for m in model.modules()}
    model.train()
    for layer in every.values():
        layer.train(layer in momenta)
    for layer in chosen.values():
        layer.reset_running_stats()
        layer.momentum = None
    seen = 0
    try:
        for inputs in batches:
            call_model(model, inputs)
            seen += 1
    finally:
        for layer, momentum in momenta.items():
            layer.momentum = momentum
            layer.num_batches_tracked.copy_(tracked[layer])
        for module, mode in modes.items():
            module.training = mode
    if seen == 0:
        raise CombineError(f"{source} yielded no batches, so BatchNorm statistics cannot be recomputed")
    return seen


def recompute_batchnorm(
    model: nn.Module, plan: CombinePlan, batches: Callable[[], Iterable[Any]], source: str = "the train split"
) -> list[str]:
    """Recompute BatchNorm statistics of a combine's averaged or crossed groups only (``stale_batchnorm``).

    ``batches()`` yields model inputs of the training split; returns the layers recomputed.
    """
    sources = {g.group: tuple(s.epoch if s.epoch is not None else str(s.path) for s in g.sources) for g in plan.groups}
    key_groups = {key: g.group for g in plan.groups for key in g.infos}
    first = next(iter(batches()), None)
    if first is None:
        raise CombineError(f"{source} yielded no batches, so BatchNorm statistics cannot be recomputed")
    layers = stale_batchnorm(model, key_groups, sources, first)
    update_bn(model, batches(), source, layers)
    return layers
