"""``combine``: build one model from a chosen epoch (or epoch average) per module group, streaming.

Tensors are read one at a time from the source files and written straight into the output, so
peak memory stays near the largest tensor (plus the model itself only when BatchNorm is recomputed
or a ``.pt`` output is asked for), whatever the number of groups. Into a safetensors output, a
tensor taken unchanged from a local safetensors file is not read at all: its bytes are copied file
to file, so a combine of picks runs at about the speed of a plain copy. Without an output the combined
state dict is kept in memory (``CombineResult.state_dict``) and written only on ``write``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from modules.atomic import atomic_path, check_output_file, write_json_atomic
from modules.combine.batchnorm import recompute_batchnorm
from modules.combine.model_fit import describe_spec_model, load_into_model, plan_source_text
from modules.combine.plan import (
    CombinePlan,
    FileChoice,
    files_from_picks,
    plan_from_files,
    plan_from_run,
    resolve_selection,
    selection_epochs,
)
from modules.combine.provenance import PROVENANCE_KEY, provenance_of, sha256_of, sidecar_path
from modules.combine.sources import iter_plan
from modules.errors import CombineError, CombineWarning
from modules.importing.importer import open_run
from modules.rundir.byte_ranges import FileRange
from modules.rundir.run_dir import RunDir
from modules.rundir.run_spec import SpecLike, as_spec, run_or_folder, spec_for_run, stored_spec
from modules.rundir.safetensors_stream import write_streaming
from modules.spec.schema import Spec
from modules.spec.selection import (
    Selection,
    analysis_picks,
    choice_for_epochs,
    coupling_violations,
    load_selection,
)

FORMATS = ("safetensors", "pt")
#: What an analysis can be given as: its picks, a result with ``.selection``, or the folder it wrote.
AnalysisLike = Selection | str | os.PathLike[str] | Any


@dataclass
class CombineResult:
    """A combined model: its plan, provenance, where it was written, or its state dict in memory."""

    plan: CombinePlan
    provenance: dict[str, Any]
    output: Path | None = None
    #: The combined weights when no output was asked for (None once streamed to a file).
    state_dict: dict[str, torch.Tensor] | None = None
    #: Doubts about the combination, e.g. couplings of the spec it breaks (also issued as warnings).
    warnings: list[str] = field(default_factory=list)

    @property
    def choices(self) -> dict[str, Any]:
        """Group -> the epoch, window or file it was taken from."""
        return self.plan.choices

    @property
    def batchnorm_recomputed(self) -> list[str] | None:
        """BatchNorm layers whose statistics were recomputed; None when not asked for."""
        return self.provenance.get("batchnorm_recomputed")

    def write(self, output: str | os.PathLike[str], fmt: str | None = None) -> Path:
        """Write the in-memory state dict to ``output`` (format from the suffix unless ``fmt``)."""
        if self.state_dict is None:
            raise CombineError(f"this combination was streamed to {self.output} and not kept in memory; read that file")
        output = check_output_file(output)
        fmt = output_format(output, fmt)
        check_output_path(output, self.plan)
        self.provenance = {**self.provenance, "format": fmt}
        write_tensors(output, fmt, self.plan.layout(), iter(self.state_dict.items()), self.provenance)
        self.output = output
        return output


def combine(
    run: RunDir | str | os.PathLike[str] | None = None,
    selection: Selection | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    *,
    files: Mapping[str, FileChoice] | None = None,
    default: str | os.PathLike[str] | None = None,
    analysis: AnalysisLike | None = None,
    spec: SpecLike | None = None,
    update_bn: bool = False,
    fmt: str | None = None,
    progress: bool = False,
    trust_run_spec: bool = False,
) -> CombineResult:
    """Build one model from a choice per module group.

    Two forms: a ``run`` directory with a ``selection`` (group -> epoch, or ``{"average": [first,
    last]}``, or a selection.json path), or whole-model checkpoint ``files`` per group (one path, or
    several to average) with ``default`` for the rest and the ``spec`` that names the groups.
    ``run`` may also be a folder of checkpoint files (imported on the fly, as ``analyze`` and
    ``evaluate`` do; then ``spec`` is needed). Groups neither form names take the ``analysis``'s
    pick. ``update_bn`` recomputes BatchNorm statistics where they no longer fit (averaged groups,
    groups fed by another epoch's group); it runs the spec's code, so it uses the run's stored spec
    only with ``trust_run_spec``. With ``output`` the model is streamed to that file; without, it
    is kept in ``state_dict``.
    """
    if output is not None:
        output = check_output_file(output)
        fmt = output_format(output, fmt)
    with contextlib.ExitStack() as stack:
        if output is not None:
            stack.enter_context(output_lock(output))
        return _combine(
            stack, run, selection, output, files, default, analysis, spec, update_bn, fmt, progress, trust_run_spec
        )


def _combine(
    stack: contextlib.ExitStack,
    run: RunDir | str | os.PathLike[str] | None,
    selection: Selection | Mapping[str, Any] | str | os.PathLike[str] | None,
    output: Path | None,
    files: Mapping[str, FileChoice] | None,
    default: str | os.PathLike[str] | None,
    analysis: AnalysisLike | None,
    spec: SpecLike | None,
    update_bn: bool,
    fmt: str | None,
    progress: bool,
    trust_run_spec: bool,
) -> CombineResult:
    picks, picks_source = _picks(analysis)
    problems: list[str] = []
    run_dir: RunDir | None = None
    spec_obj: Spec | None = None
    spec_file: Path | None = None
    stored_only = False
    if files or default is not None:
        if run is not None or selection is not None:
            raise CombineError(
                "use either checkpoint files per group (with a default file) or a run directory with a"
                " selection of epochs, not both"
            )
        if spec is None:
            raise CombineError("combining checkpoint files per group needs the spec that names the groups; pass the spec")
        spec_obj, spec_file = as_spec(spec)
        chosen = files_from_picks(spec_obj, files or {}, default, picks, picks_source) if picks else dict(files or {})
        plan = plan_from_files(spec_obj, chosen, default)
    else:
        if run is None:
            raise CombineError("pass a run directory with a selection, or checkpoint files per group with the spec")
        if spec is not None:
            spec_obj, spec_file = as_spec(spec)
        run = run_or_folder(run)
        source = (run.path if run.is_local else run.location) if isinstance(run, RunDir) else run
        if isinstance(run, RunDir):
            run_dir = run
        else:
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="sweetspot-import-"))
            run_dir = open_run(source, spec_obj, scratch, progress=progress)
        if spec_obj is None and (stored := stored_spec(run_dir)) is not None:
            spec_obj, spec_file = stored  # groups and couplings only: nothing is imported
            stored_only = True
        if isinstance(selection, (str, os.PathLike)):
            selection = load_selection(selection)
        resolved = resolve_selection(run_dir.groups, selection, picks)
        epochs = selection_epochs(resolved, run_dir)
        recorded_choices = resolved.to_json()
        for group, choice in list(recorded_choices.items()):
            if isinstance(choice, dict) and "average" in choice and group in epochs:
                first, last = choice["average"]
                used = epochs[group]
                if (used[0], used[-1]) != (first, last):  # a window reaching past the recorded epochs
                    narrowed = choice_for_epochs(used, run_dir.epochs)
                    recorded_choices[group] = narrowed if isinstance(narrowed, int) else narrowed.model_dump(mode="json")
                    problems.append(
                        f"group {group!r}: window [{first}, {last}] reaches past the recorded epochs"
                        f" {run_dir.epochs[0]}..{run_dir.epochs[-1]}; averaged {used} (recorded as"
                        f" {recorded_choices[group]})"
                    )
        plan = plan_from_run(run_dir, epochs, recorded_choices)
        if run_dir.is_local and run_dir.path != source:  # imported on the fly: provenance and output checks name the user's folder
            plan = dataclasses.replace(plan, run_dir=source)
        if spec_obj is not None:
            problems += [
                f"{problem}; groups trained together co-adapt, so check the result with `sweetspot evaluate`"
                for problem in coupling_violations(epochs, spec_obj.couplings)
            ]
    for problem in problems:
        warnings.warn(problem, CombineWarning, stacklevel=2)
    bn_batches = factory = None
    model_desc = "the spec's model"
    if update_bn:
        if spec_obj is None or stored_only:
            spec_obj, spec_file = spec_for_run(
                spec, run_dir, trust_run_spec=trust_run_spec, purpose="recomputing BatchNorm statistics (--update-bn)"
            )
        model_desc = describe_spec_model(spec_obj, spec_file)
        train = spec_obj.load_data(("train",))["train"]
        batches = spec_obj.batch_iterator()
        factory = spec_obj.build_model

        def bn_batches() -> Any:
            return batches(train)

    if output is not None:
        provenance = write_combined(plan, output, fmt, bn_batches, factory, progress, model_desc)
        return CombineResult(plan, provenance, output, None, problems)
    provenance = provenance_of(plan, None, update_bn)
    tensors = combined_tensors(plan, provenance, bn_batches, factory, progress, model_desc)
    state = {key: tensor.clone() for key, tensor in tensors}
    return CombineResult(plan, provenance, None, state, problems)


def _picks(analysis: AnalysisLike | None) -> tuple[Selection | None, str]:
    """The analysis's per-group picks and how messages name them."""
    if analysis is None:
        return None, ""
    if isinstance(analysis, Selection):
        return analysis, "the analysis's selection"
    if isinstance(analysis, (str, os.PathLike)):
        return analysis_picks(analysis), f"the analysis in {analysis}"
    picks = getattr(analysis, "selection", None)
    if not isinstance(picks, Selection):
        raise CombineError(
            f"analysis {type(analysis).__name__} is neither a Selection, an analysis result nor a folder;"
            " pass what `analyze` returned or the folder it wrote"
        )
    return picks, "the analysis's selection"


def output_format(output: Path, fmt: str | None) -> str:
    """``safetensors`` or ``pt``: the one asked for, else from the output's suffix."""
    fmt = fmt or ("pt" if output.suffix in (".pt", ".pth", ".bin") else "safetensors")
    if fmt not in FORMATS:
        raise CombineError(f"{fmt!r} is not supported; use one of {list(FORMATS)}", param="format")
    return fmt


def check_output_path(output: Path, plan: CombinePlan) -> None:
    """Refuse an output inside the run directory or on top of a source file."""
    resolved = output.resolve()
    if isinstance(plan.run_dir, Path):  # a run on object storage cannot hold a local output
        run = plan.run_dir.resolve()
        if resolved == run or run in resolved.parents:
            raise CombineError(
                f"{output} is inside the run directory {plan.run_dir}; the run is input only."
                " Write the combined model elsewhere (e.g. combined.safetensors)",
                param="output",
            )
    for group in plan.groups:
        for source in group.sources:
            if source.local and Path(source.path).resolve() == resolved:
                raise CombineError(
                    f"{output} is the source checkpoint of group {group.group!r}; choose another path", param="output"
                )


def combined_tensors(
    plan: CombinePlan,
    provenance: dict[str, Any],
    bn_batches: Callable[[], Iterable[Any]] | None = None,
    model_factory: Callable[[], torch.nn.Module] | None = None,
    progress: bool = False,
    model_desc: str = "the spec's model",
    ranges: bool = False,
) -> Iterator[tuple[str, torch.Tensor | FileRange]]:
    """The combined tensors in output order; with ``bn_batches``, from a fresh model whose BatchNorm
    statistics were recomputed (the layers are recorded in ``provenance``). With ``ranges`` (and no
    ``bn_batches``), tensors taken unchanged from a source file come as ``FileRange``s."""
    if bn_batches is None:
        return _with_progress(iter_plan(plan, ranges), plan.nbytes, progress)
    tensors = _with_progress(iter_plan(plan), plan.nbytes, progress)
    if model_factory is None:
        raise CombineError("recomputing BatchNorm statistics needs the spec's model; pass the spec")
    model = model_factory()
    load_into_model(model, tensors, plan_source_text(plan), model_desc)
    provenance["batchnorm_recomputed"] = recompute_batchnorm(model, plan, bn_batches)
    state = model.state_dict()
    return ((k, state[k].detach().to(getattr(torch, dtype))) for k, (_, dtype) in plan.layout().items())


def write_tensors(
    output: Path,
    fmt: str,
    layout: dict[str, tuple[tuple[int, ...], str]],
    tensors: Iterator[tuple[str, torch.Tensor | FileRange]],
    provenance: dict[str, Any],
) -> None:
    """Write ``tensors`` atomically: safetensors with the provenance in its header, or ``.pt`` plus a
    sidecar (which takes tensors only, no ``FileRange``)."""
    if fmt == "safetensors":
        metadata = {PROVENANCE_KEY: json.dumps(provenance), "format": "pt"}
        with atomic_path(output) as tmp:
            write_streaming(tmp, layout, tensors, metadata)
        return
    state_dict = {}
    for key, tensor in tensors:
        assert isinstance(tensor, torch.Tensor)
        state_dict[key] = tensor.clone() if tensor.untyped_storage().nbytes() != tensor.nbytes else tensor
    with atomic_path(output) as tmp:
        torch.save(state_dict, tmp)
        digest = sha256_of(tmp)
    del state_dict
    # the sidecar names the .pt it describes, so one left from an earlier write is recognised as stale
    write_json_atomic(sidecar_path(output), {**provenance, "sha256": digest})


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold ``<output>.lock`` exclusively while writing, so a second combine to the same file is refused."""
    lock = Path(f"{output}.lock")
    try:
        handle = open(lock, "a+b")  # noqa: SIM115 - held for the whole write
    except OSError as error:
        raise CombineError(f"cannot create the lock file {lock} ({error}); check the folder", param="output") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(handle.fileno()).st_ino != os.stat(lock).st_ino:
                raise BlockingIOError  # the holder before us removed it: someone else may hold the new one
        except (BlockingIOError, FileNotFoundError):
            raise CombineError(
                f"{output} is being written by another combine (it holds {lock}); wait for it to finish or"
                " write to another file",
                param="output",
            ) from None
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_combined(
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
    # a safetensors output copies the tensors taken unchanged from a source file by file ranges
    tensors = combined_tensors(plan, provenance, bn_batches, model_factory, progress, model_desc, fmt == "safetensors")
    write_tensors(output, fmt, plan.layout(), tensors, provenance)
    return provenance


def _with_progress(
    tensors: Iterable[tuple[str, torch.Tensor | FileRange]], total_bytes: int, enabled: bool
) -> Iterator[tuple[str, torch.Tensor | FileRange]]:
    """Pass ``tensors`` through, advancing a byte-counting progress bar (stderr) when ``enabled``."""
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="combining", disable=not enabled) as bar:
        for key, tensor in tensors:
            yield key, tensor
            bar.update(tensor.nbytes)
