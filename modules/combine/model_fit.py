"""Whether weights fit a model, and strict loading into one, with messages that say what differs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from modules.combine.plan import CombinePlan
from modules.combine.sources import open_source
from modules.errors import CombineError
from modules.rundir.run_dir import RunDir


def describe_spec_model(spec: Any, path: str | os.PathLike[str] | None = None) -> str:
    """How messages name a spec's model: ``the model of spec 'demo' (sweetspot.yaml: pkg:build with model_args {...})``."""
    where = f"{path}: " if path is not None else ""
    args = f" with model_args {spec.model_args}" if spec.model_args else " (no model_args)"
    return f"the model of spec {spec.name!r} ({where}{spec.model}{args})"


def misfit_text(missing: Sequence[str], unexpected: Sequence[str], wrong: Sequence[str]) -> str:
    """``3 keys missing [...]; 1 unexpected key [...]; ...``: only the kinds that occur, at most 10 of each."""

    def part(items: Sequence[str], one: str, many: str) -> str | None:
        if not items:
            return None
        more = f" and {len(items) - 10} more" if len(items) > 10 else ""
        return f"{len(items)} {one if len(items) == 1 else many} {list(items[:10])}{more}"

    parts = [
        part(missing, "key the model has but the weights lack", "keys the model has but the weights lack"),
        part(unexpected, "key the weights have but the model lacks", "keys the weights have but the model lacks"),
        part(wrong, "shape mismatch", "shape mismatches"),
    ]
    return "; ".join(p for p in parts if p)


def model_layout(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every entry of the model's state dict."""
    return {k: tuple(t.shape) for k, t in model.state_dict().items()}


def spec_model_layout(spec: Any) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the spec's model, built on the ``meta`` device (no memory) where the factory allows."""
    try:
        with torch.device("meta"):
            model = spec.build_model()
    except Exception:  # noqa: BLE001 - a factory that cannot build on meta is built for real
        model = spec.build_model()
    return model_layout(model)


def layout_misfit(
    infos: Mapping[str, Sequence[int]], layout: Mapping[str, Sequence[int]]
) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, wrong shape)`` of weights ``infos`` against a model ``layout`` (key -> shape)."""
    missing = [k for k in layout if k not in infos]
    unexpected = [k for k in infos if k not in layout]
    wrong = [
        f"{k} {list(shape)} vs model {list(layout[k])}"
        for k, shape in infos.items()
        if k in layout and tuple(shape) != tuple(layout[k])
    ]
    return missing, unexpected, wrong


def misfit_error(source: str, problems: str, model_desc: str, fix: str) -> CombineError:
    return CombineError(f"the weights in {source} do not fit {model_desc}: {problems}. {fix}")


#: What to do when weights do not fit the model, unless a caller knows better.
FIT_FIX = "Pass the spec the weights were recorded with (its model and model_args must build the same model)"


def check_file_fits(
    path: str | os.PathLike[str],
    layout: Mapping[str, Sequence[int]],
    model_desc: str = "the spec's model",
    fix: str = FIT_FIX,
) -> None:
    """Raise before any work when the keys or shapes stored in ``path`` do not fit ``layout`` (nothing is loaded)."""
    path = Path(path)
    with open_source(path) as source:
        infos = {k: shape for k, (shape, _) in source.infos().items()}
    problems = misfit_text(*layout_misfit(infos, layout))
    if problems:
        raise misfit_error(str(path), problems, model_desc, fix)


def check_run_fits(
    run: RunDir, layout: Mapping[str, Sequence[int]], model_desc: str = "the spec's model", fix: str = FIT_FIX
) -> None:
    """Raise before any work when the run's recorded keys or shapes do not fit ``layout``."""
    infos = {k: i.shape for group in run.groups for k, i in run.tensor_infos(group).items()}
    problems = misfit_text(*layout_misfit(infos, layout))
    if problems:
        raise misfit_error(f"run directory {run.label}", problems, model_desc, fix)


def load_into_model(
    model: torch.nn.Module,
    tensors: Iterable[tuple[str, torch.Tensor]],
    source: str,
    model_desc: str = "the spec's model",
    fix: str = FIT_FIX,
) -> None:
    """Copy ``tensors`` into ``model`` one at a time, strictly: every key present, shapes equal.

    ``source`` names where the weights come from ("run directory /x", a file path), ``model_desc``
    the model, ``fix`` what to do: they make the error message.
    """
    target = model.state_dict(keep_vars=True)
    seen: set[str] = set()
    unexpected: list[str] = []
    wrong: dict[str, str] = {}
    with torch.no_grad():
        for key, tensor in tensors:
            if key not in target:
                unexpected.append(key)
                continue
            if tuple(target[key].shape) != tuple(tensor.shape):
                wrong[key] = f"{key} {list(tensor.shape)} vs model {list(target[key].shape)}"
                continue
            target[key].copy_(tensor)
            seen.add(key)
    missing = [k for k in target if k not in seen and k not in wrong]
    if unexpected or missing or wrong:
        raise misfit_error(source, misfit_text(missing, unexpected, list(wrong.values())), model_desc, fix)


def load_file_into_model(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    model_desc: str = "the spec's model",
    fix: str = FIT_FIX,
) -> None:
    """Strictly load a combined (or any full-model) checkpoint file into ``model``."""
    path = Path(path)
    with open_source(path) as source:
        load_into_model(model, ((k, source.get(k)) for k in source.infos()), str(path), model_desc, fix)


def plan_source_text(plan: CombinePlan) -> str:
    """Where a plan's weights come from, for messages: ``run /x`` or the checkpoint files."""
    if plan.run_dir is not None:
        return f"run directory {plan.run_dir}"
    files = list(dict.fromkeys(str(s.path) for g in plan.groups for s in g.sources))
    more = f" and {len(files) - 1} other file{'s' if len(files) > 2 else ''}" if len(files) > 1 else ""
    return f"{files[0]}{more}"
