"""What a combine reads (its plan: groups and their source files) and reading it one tensor at a
time: safetensors files or ``.pt`` state dicts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modules.errors import CheckpointImportError, CombineError, UnsafeCheckpointError
from modules.importing.checkpoint_io import load_state_dict, without_skip_advice
from modules.rundir.byte_ranges import FileRange
from modules.rundir.run_dir import RunDir, TensorInfo
from modules.rundir.safetensors_stream import CODE_DTYPES, SafetensorsReader


@dataclass(frozen=True)
class SourceFile:
    """One file a group's tensors are read from (a run's group file or a seed checkpoint).

    A group file of a run on object storage has its URI as ``path`` and is read through ``run``.
    """

    path: Path | str
    sha256: str
    epoch: int | None = None
    run: RunDir | None = field(default=None, compare=False, repr=False)
    group: str = ""

    @property
    def local(self) -> bool:
        """Whether ``path`` is a file on this machine (else it is read through ``run``)."""
        return self.run is None or self.run.is_local


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
    #: The run's folder, or its URI for a run on object storage; None for checkpoint files.
    run_dir: Path | str | None = None

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


class _Source:
    """Tensor access to one source file: ``get(key)`` and ``infos()``."""

    def __init__(self, path: Path | str, reader: SafetensorsReader | None = None) -> None:
        self.path = path
        self._reader: SafetensorsReader | None = reader
        self._state: dict[str, torch.Tensor] | None = None
        if reader is not None:
            return
        path = Path(path)
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

    @property
    def keeps_tensors(self) -> bool:
        """Whether ``get`` hands out tensors this source keeps (a loaded ``.pt``), not fresh ones."""
        return self._state is not None

    def get(self, key: str) -> torch.Tensor:
        if self._reader is not None:
            return self._reader.get(key)
        assert self._state is not None
        if key not in self._state:
            raise CombineError(f"{self.path} has no tensor {key!r}; it does not hold this model's weights")
        return self._state[key]

    def range(self, key: str) -> FileRange | None:
        """Where ``key`` lies in a local safetensors file, to copy it unread; None otherwise."""
        return self._reader.range(key) if self._reader is not None else None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._state = None


def _code_name(code: str) -> str:
    return CODE_DTYPES.get(code, code)


@contextlib.contextmanager
def open_source(path: Path | SourceFile) -> Iterator[_Source]:
    """Open a source file (a path, or a planned source, which may be on object storage) for
    tensor-at-a-time reading; closed (and unmapped) on exit."""
    if not isinstance(path, (str, Path)) and not path.local:
        assert path.run is not None and path.epoch is not None
        source = _Source(path.path, path.run.open_group(path.epoch, path.group))
    else:
        source = _Source(Path(path if isinstance(path, (str, Path)) else path.path))
    try:
        yield source
    finally:
        source.close()


def _wide_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def iter_group(plan: GroupPlan, ranges: bool = False) -> Iterator[tuple[str, torch.Tensor | FileRange]]:
    """The group's combined tensors, one at a time: a pick, or a mean over the sources.

    Floating tensors are averaged in float32 (float64 for float64) and cast back; integer and
    bool tensors (e.g. ``num_batches_tracked``) come from the last (latest) source. With
    ``ranges``, a tensor taken unchanged from a local safetensors file comes as its ``FileRange``
    (valid until the next tensor is drawn), to be copied without being read.
    """
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(open_source(s)) for s in plan.sources]
        for key, info in plan.infos.items():
            dtype = getattr(torch, info.dtype)
            tensor: torch.Tensor | FileRange | None
            if len(sources) == 1 or not dtype.is_floating_point:
                tensor = sources[-1].range(key) if ranges else None
                if tensor is None:
                    tensor = sources[-1].get(key)
                _check_tensor(tensor, key, info, sources[-1].path)
            else:
                total: torch.Tensor | None = None
                for source in sources:
                    part = source.get(key)
                    _check_tensor(part, key, info, source.path)
                    if total is None:  # a fresh tensor already in the wide dtype becomes the sum itself
                        total = part.to(_wide_dtype(dtype), copy=source.keeps_tensors)
                    else:
                        total.add_(part)
                    del part
                assert total is not None
                tensor = total.div_(len(sources)).to(dtype)
                del total
            yield key, tensor
            del tensor


def _check_tensor(tensor: torch.Tensor | FileRange, key: str, info: TensorInfo, path: Path | str) -> None:
    dtype = tensor.dtype if isinstance(tensor, FileRange) else str(tensor.dtype).removeprefix("torch.")
    if tuple(tensor.shape) != tuple(info.shape) or dtype != info.dtype:
        raise CombineError(
            f"{path}: tensor {key!r} has shape {list(tensor.shape)} {dtype}, expected"
            f" {list(info.shape)} {info.dtype}; the sources come from different models"
        )


def iter_plan(plan: CombinePlan, ranges: bool = False) -> Iterator[tuple[str, torch.Tensor | FileRange]]:
    """All combined tensors in output order, one at a time (``ranges``: see ``iter_group``)."""
    for group in plan.groups:
        yield from iter_group(group, ranges)
