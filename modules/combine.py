"""Parameter crossover: build one model from a chosen epoch (or epoch average) per group, streaming.

Tensors are read one at a time from the source files and written straight into the output, so
peak memory stays near the largest tensor (plus the model itself only when BatchNorm is recomputed
or a ``.pt`` output is asked for), whatever the number of groups.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from modules import __version__
from modules.atomic import atomic_path, check_output_file, write_json_atomic
from modules.batchnorm import stale_batchnorm, update_bn
from modules.checkpoint_io import load_state_dict, without_skip_advice
from modules.errors import CheckpointImportError, CombineError, UnsafeCheckpointError
from modules.importer import epoch_of_file
from modules.rundir import RunDir, TensorInfo, sha256_file
from modules.safetensors_stream import CODE_DTYPES, SafetensorsReader, read_header, write_streaming
from modules.selection import Selection, SelectionError

PROVENANCE_KEY = "sweetspot_provenance"
SIDECAR_SUFFIX = ".provenance.json"
FORMATS = ("safetensors", "pt")


@dataclass(frozen=True)
class SourceFile:
    """One file a group's tensors are read from (a run's group file or a seed checkpoint)."""

    path: Path
    sha256: str
    epoch: int | None = None


@dataclass(frozen=True)
class GroupPlan:
    """One group: its keys with shapes/dtypes, and the sources averaged (one source: a pick)."""

    group: str
    infos: dict[str, TensorInfo]
    sources: tuple[SourceFile, ...]


@dataclass(frozen=True)
class CombinePlan:
    """Everything a combine reads, in output order, plus the choice it came from."""

    groups: tuple[GroupPlan, ...]
    choices: dict[str, Any]
    run_dir: Path | None = None

    def layout(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Output key -> (shape, dtype), in output order."""
        return {k: (i.shape, i.dtype) for g in self.groups for k, i in g.infos.items()}

    @property
    def nbytes(self) -> int:
        return sum(i.nbytes for g in self.groups for i in g.infos.values())

    @property
    def averages(self) -> bool:
        """True when some group is averaged over more than one source."""
        return any(len(g.sources) > 1 for g in self.groups)


# -- planning -----------------------------------------------------------------------------------


def selection_epochs(selection: Selection, run: RunDir) -> dict[str, list[int]]:
    """Resolve a selection against a run: group -> recorded epochs (all groups must be named)."""
    selection.check(run.groups, run.epochs)
    missing = [g for g in run.groups if g not in selection.root]
    if missing:
        raise SelectionError(
            f"the selection names no epoch for groups {missing}; name them (--group G=EPOCH), or pass"
            " --analysis DIR so the analysis's pick is used for groups not named"
        )
    return {g: selection.epochs_for(g, run.epochs) for g in run.groups}


def plan_from_run(run: RunDir, epochs: Mapping[str, list[int]], choices: Mapping[str, Any] | None = None) -> CombinePlan:
    """Plan a combine over a run directory from group -> epochs to average (one epoch: a pick)."""
    unknown = [g for g in epochs if g not in run.groups]
    missing = [g for g in run.groups if g not in epochs]
    if unknown or missing:
        raise SelectionError(
            f"groups unknown {unknown}, not named {missing}; the run {run.path} has groups {run.groups}"
        )
    groups = []
    for group in run.groups:
        chosen = sorted(set(epochs[group]))
        bad = [e for e in chosen if e not in run.epochs]
        if not chosen or bad:
            raise SelectionError(
                f"group {group!r}: epochs {bad or chosen} not recorded in {run.path}; recorded epochs: {run.epochs}"
            )
        sources = tuple(
            SourceFile(run.group_path(e, group), run.epoch_entry(e).files[group].sha256, e) for e in chosen
        )
        groups.append(GroupPlan(group, run.tensor_infos(group), sources))
    if choices is None:
        choices = {g: (e[0] if len(e) == 1 else {"epochs": sorted(e)}) for g, e in epochs.items()}
    return CombinePlan(tuple(groups), dict(choices), run.path)


def plan_from_files(
    spec: Any,
    files: Mapping[str, str | os.PathLike[str] | Sequence[str | os.PathLike[str]]],
    default: str | os.PathLike[str] | None = None,
) -> CombinePlan:
    """Plan a combine over whole-model checkpoints: group -> file (or files to average), others from ``default``."""
    unknown = [g for g in files if g not in spec.groups]
    if unknown:
        raise CombineError(f"groups {unknown} are not in spec {spec.name!r}; its groups are {list(spec.groups)}")
    missing = [g for g in spec.groups if g not in files]
    if missing and default is None:
        raise CombineError(
            f"no checkpoint given for groups {missing}; pass --<group> FILE for each, or --default FILE"
            " for all groups not named"
        )
    chosen = {g: _paths(files.get(g, default)) for g in spec.groups}  # type: ignore[arg-type]
    infos_by_path: dict[Path, dict[str, dict[str, TensorInfo]]] = {}
    sha_by_path: dict[Path, str] = {}
    groups = []
    for group, paths in chosen.items():
        for path in paths:
            if path not in infos_by_path:
                infos_by_path[path] = _file_group_infos(spec, path)
                sha_by_path[path] = sha256_file(path)
        infos = infos_by_path[paths[0]][group]
        if not infos:
            raise CombineError(f"{paths[0]} holds no tensor of group {group!r} (patterns {spec.groups[group]}); pick a full-model checkpoint")
        groups.append(GroupPlan(group, infos, tuple(SourceFile(p, sha_by_path[p], epoch_of_file(p)) for p in paths)))
    choices = {g: str(p[0]) if len(p) == 1 else [str(x) for x in p] for g, p in chosen.items()}
    return CombinePlan(tuple(groups), choices, None)


def _paths(value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    if not value:
        raise CombineError("an average over checkpoint files needs at least one file")
    return [Path(v) for v in value]


def _file_group_infos(spec: Any, path: Path) -> dict[str, dict[str, TensorInfo]]:
    with open_source(path) as source:
        infos = {k: TensorInfo(tuple(shape), dtype) for k, (shape, dtype) in source.infos().items()}
    assigned = spec.assign_groups(infos)
    return {g: {k: infos[k] for k in keys} for g, keys in assigned.items()}


# -- reading sources ----------------------------------------------------------------------------


class _Source:
    """Tensor access to one source file: ``get(key)`` and ``infos()``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: SafetensorsReader | None = None
        self._state: dict[str, torch.Tensor] | None = None
        if path.suffix == ".safetensors":
            self._reader = SafetensorsReader(path)
        else:
            try:
                self._state = load_state_dict(path)  # weights_only, memory-mapped for zip files
            except UnsafeCheckpointError:
                raise
            except CheckpointImportError as error:  # combine and evaluate have no --skip-bad
                raise CheckpointImportError(without_skip_advice(str(error))) from None

    def infos(self) -> dict[str, tuple[tuple[int, ...], str]]:
        if self._reader is not None:
            return {k: (tuple(e["shape"]), _code_name(e["dtype"])) for k, e in self._reader.entries.items()}
        assert self._state is not None
        return {k: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for k, t in self._state.items()}

    def get(self, key: str) -> torch.Tensor:
        if self._reader is not None:
            return self._reader.get(key)
        assert self._state is not None
        if key not in self._state:
            raise CombineError(f"{self.path} has no tensor {key!r}; it does not hold this model's weights")
        return self._state[key]

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._state = None


def _code_name(code: str) -> str:
    return CODE_DTYPES.get(code, code)


@contextlib.contextmanager
def open_source(path: Path) -> Iterator[_Source]:
    """Open a source file for tensor-at-a-time reading; closed (and unmapped) on exit."""
    source = _Source(Path(path))
    try:
        yield source
    finally:
        source.close()


def _wide_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def iter_group(plan: GroupPlan) -> Iterator[tuple[str, torch.Tensor]]:
    """The group's combined tensors, one at a time: a pick, or a mean over the sources.

    Floating tensors are averaged in float32 (float64 for float64) and cast back; integer and
    bool tensors (e.g. ``num_batches_tracked``) come from the last (latest) source.
    """
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(open_source(s.path)) for s in plan.sources]
        for key, info in plan.infos.items():
            dtype = getattr(torch, info.dtype)
            if len(sources) == 1 or not dtype.is_floating_point:
                tensor = sources[-1].get(key)
                _check_tensor(tensor, key, info, sources[-1].path)
            else:
                total: torch.Tensor | None = None
                for source in sources:
                    part = source.get(key)
                    _check_tensor(part, key, info, source.path)
                    total = part.to(_wide_dtype(dtype), copy=True) if total is None else total.add_(part)
                    del part
                assert total is not None
                tensor = total.div_(len(sources)).to(dtype)
                del total
            yield key, tensor
            del tensor


def _check_tensor(tensor: torch.Tensor, key: str, info: TensorInfo, path: Path) -> None:
    if tuple(tensor.shape) != tuple(info.shape) or str(tensor.dtype) != f"torch.{info.dtype}":
        raise CombineError(
            f"{path}: tensor {key!r} has shape {list(tensor.shape)} {tensor.dtype}, expected"
            f" {list(info.shape)} {info.dtype}; the sources come from different models"
        )


def iter_plan(plan: CombinePlan) -> Iterator[tuple[str, torch.Tensor]]:
    """All combined tensors in output order, one at a time."""
    for group in plan.groups:
        yield from iter_group(group)


# -- loading into a model ------------------------------------------------------------------------


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
FIT_FIX = "Pass the --spec the weights were recorded with (its model and model_args must build the same model)"


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
        raise misfit_error(f"run directory {run.path}", problems, model_desc, fix)


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


# -- provenance and writing ----------------------------------------------------------------------


def provenance_of(plan: CombinePlan, fmt: str, update_bn: bool) -> dict[str, Any]:
    """What went into a combined file: the choice, each source file's sha256, the version."""
    return {
        "sweetspot_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(plan.run_dir) if plan.run_dir else None,
        "selection": plan.choices,
        "sources": {
            g.group: [{"path": str(s.path), "epoch": s.epoch, "sha256": s.sha256} for s in g.sources]
            for g in plan.groups
        },
        "update_bn": update_bn,
        "format": fmt,
    }


def output_format(output: Path, fmt: str | None) -> str:
    """``safetensors`` or ``pt``: the one asked for, else from the output's suffix."""
    fmt = fmt or ("pt" if output.suffix in (".pt", ".pth", ".bin") else "safetensors")
    if fmt not in FORMATS:
        raise CombineError(f"--format {fmt!r} is not supported; use one of {list(FORMATS)}")
    return fmt


def check_output_path(output: Path, plan: CombinePlan) -> None:
    """Refuse an output inside the run directory or on top of a source file."""
    resolved = output.resolve()
    if plan.run_dir is not None:
        run = plan.run_dir.resolve()
        if resolved == run or run in resolved.parents:
            raise CombineError(
                f"output {output} is inside the run directory {plan.run_dir}; the run is input only."
                " Write the combined model elsewhere (e.g. --output combined.safetensors)"
            )
    for group in plan.groups:
        for source in group.sources:
            if source.path.resolve() == resolved:
                raise CombineError(f"output {output} is the source checkpoint of group {group.group!r}; choose another path")


def recompute_batchnorm(
    model: torch.nn.Module, plan: CombinePlan, batches: Callable[[], Iterable[Any]], source: str = "the train split"
) -> list[str]:
    """Recompute BatchNorm statistics of averaged or crossed groups only (see ``stale_batchnorm``).

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


def combine(
    plan: CombinePlan,
    output: str | os.PathLike[str],
    fmt: str | None = None,
    bn_batches: Callable[[], Iterable[Any]] | None = None,
    model_factory: Callable[[], torch.nn.Module] | None = None,
    progress: bool = False,
    model_desc: str = "the spec's model",
) -> dict[str, Any]:
    """Write the planned model to ``output`` atomically, with provenance; return the provenance.

    With ``bn_batches`` (training-split inputs) and ``model_factory``, BatchNorm statistics of
    averaged or crossed groups are recomputed in a fresh model before its state is written.
    """
    output = check_output_file(output)
    fmt = output_format(output, fmt)
    check_output_path(output, plan)
    provenance = provenance_of(plan, fmt, bn_batches is not None)
    layout = plan.layout()
    tensors: Iterable[tuple[str, torch.Tensor]] = _with_progress(iter_plan(plan), plan.nbytes, progress)
    if bn_batches is not None:
        if model_factory is None:
            raise CombineError("recomputing BatchNorm statistics needs the spec's model; pass --spec")
        model = model_factory()
        load_into_model(model, tensors, plan_source_text(plan), model_desc)
        provenance["batchnorm_recomputed"] = recompute_batchnorm(model, plan, bn_batches)
        state = model.state_dict()
        tensors = ((k, state[k].detach().to(getattr(torch, dtype))) for k, (_, dtype) in layout.items())
    if fmt == "safetensors":
        metadata = {PROVENANCE_KEY: json.dumps(provenance), "format": "pt"}
        with atomic_path(output) as tmp:
            write_streaming(tmp, layout, iter(tensors), metadata)
    else:
        state_dict = {k: t.clone() if t.untyped_storage().nbytes() != t.nbytes else t for k, t in tensors}
        with atomic_path(output) as tmp:
            torch.save(state_dict, tmp)
        del state_dict
        write_json_atomic(sidecar_path(output), provenance)
    return provenance


def _with_progress(
    tensors: Iterable[tuple[str, torch.Tensor]], total_bytes: int, enabled: bool
) -> Iterator[tuple[str, torch.Tensor]]:
    """Pass ``tensors`` through, advancing a byte-counting progress bar (stderr) when ``enabled``."""
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="combining", disable=not enabled) as bar:
        for key, tensor in tensors:
            yield key, tensor
            bar.update(tensor.nbytes)


def sidecar_path(output: str | os.PathLike[str]) -> Path:
    """Where a ``.pt`` output's provenance lives."""
    return Path(f"{output}{SIDECAR_SUFFIX}")


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Provenance of a combined file (safetensors header or ``.pt`` sidecar); None when absent."""
    path = Path(path)
    if path.suffix == ".safetensors":
        _, metadata, _ = read_header(path)
        text = metadata.get(PROVENANCE_KEY)
    else:
        sidecar = sidecar_path(path)
        text = sidecar.read_text(encoding="utf-8") if sidecar.is_file() else None
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise CombineError(f"{path}: its provenance is not valid JSON; re-create the combined file") from None
