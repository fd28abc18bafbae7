"""The Hugging Face ``Trainer``'s layout: ``checkpoint-<global_step>/`` folders.

Each folder holds the model as ``model.safetensors``, as shards listed in
``model.safetensors.index.json`` (its ``weight_map``), or as ``pytorch_model.bin`` (read weights
only). Metrics come from the last checkpoint's ``trainer_state.json`` (``log_history``: eval
metrics under their ``eval_`` names, ``loss`` as ``train_loss``, ``learning_rate``, ``grad_norm``),
and the entries' ``epoch`` and ``step`` map steps to epochs: a run saved at epoch ends is indexed
by epoch, any other by step. ``training_args.bin``, ``optimizer.pt``, ``scheduler.pt`` and
``rng_state*.pth`` are pickles the import does not need and never opens.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import ClassVar

from safetensors.torch import load_file

from modules.errors import CheckpointImportError
from modules.importing.checkpoint_io import LoadedCheckpoint, read_checkpoint
from modules.importing.layouts.base import (
    CheckpointEntry,
    ImportPlan,
    LayoutOptions,
    list_names,
    steps_text,
)
from modules.importing.layouts.logged_metrics import metrics_at_checkpoints
from modules.importing.report import ImportReport
from modules.spec.schema import Spec

FOLDER_RE = re.compile(r"checkpoint-(?P<step>\d+)")
STATE_NAME = "trainer_state.json"
#: Weight files in the order the Trainer prefers them.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
#: ``log_history`` keys that are bookkeeping, not metrics.
SKIPPED_KEYS = (
    "step", "epoch", "total_flos", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second",
    "num_input_tokens_seen",
)
RENAMED = {"loss": "train_loss"}
OUT_OF_SCOPE = (
    "PEFT adapters (adapter_model.safetensors) and DeepSpeed ZeRO folders (global_step*/) are not"
    " imported: merge the adapter into the model (peft's merge_and_unload) or consolidate ZeRO shards"
    " (zero_to_fp32.py), save the full model per checkpoint, and import again"
)


def checkpoint_folders(source: Path) -> dict[int, Path]:
    """Step -> ``checkpoint-<step>`` folder in ``source``."""
    found = {}
    for path in source.iterdir():
        match = FOLDER_RE.fullmatch(path.name)
        if match and path.is_dir():
            found[int(match["step"])] = path
    return dict(sorted(found.items()))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointImportError(f"{path} is not readable JSON ({error}); restore it from the run") from None
    if not isinstance(data, dict):
        raise CheckpointImportError(f"{path} holds a JSON {type(data).__name__}, not an object; restore it from the run")
    return data


def _weights_file(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    names = {p.name for p in folder.iterdir()}
    scope = ""
    if "adapter_model.safetensors" in names or "adapter_config.json" in names:
        scope = f" It holds a PEFT adapter: {OUT_OF_SCOPE}"
    elif any(n.startswith("global_step") for n in names) or "zero_to_fp32.py" in names:
        scope = f" It holds DeepSpeed ZeRO shards: {OUT_OF_SCOPE}"
    raise CheckpointImportError(
        f"{folder} holds none of the Trainer's weight files {list(WEIGHT_FILES)} (it holds"
        f" {list_names(folder.iterdir())}).{scope or ' Restore the weights or move the folder out of the run'}"
    )


def _shard_files(index_path: Path) -> dict[str, list[str]]:
    """Shard file -> its keys, from an index's ``weight_map``; a missing shard is an error."""
    weight_map = _read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointImportError(
            f"{index_path} has no weight_map (key -> shard file); restore it from the run"
        )
    shards: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        shards.setdefault(str(shard), []).append(key)
    missing = [name for name in shards if not (index_path.parent / name).is_file()]
    if missing:
        raise CheckpointImportError(
            f"{index_path} lists shards {missing} that are not in {index_path.parent} ({len(shards[missing[0]])}"
            f" keys such as {shards[missing[0]][:3]} live there); restore the shard files, or move the"
            " checkpoint folder out of the run and import the rest"
        )
    return shards


def read_weights(path: Path, allow_globals: tuple[str, ...]) -> LoadedCheckpoint:
    """The model of one checkpoint folder from its weight file (or its shards, per the index)."""
    if not path.name.endswith(".index.json"):
        return read_checkpoint(path, allow_globals)
    state, skipped = {}, []
    for shard, keys in _shard_files(path).items():
        shard_path = path.parent / shard
        if shard_path.suffix == ".safetensors":
            try:
                tensors = load_file(shard_path)
            except Exception as error:
                raise CheckpointImportError(f"{shard_path} is not a readable safetensors file ({error})") from None
        else:
            loaded = read_checkpoint(shard_path, allow_globals)
            tensors, skipped = loaded.state, skipped + loaded.skipped_globals
        absent = [k for k in keys if k not in tensors]
        if absent:
            raise CheckpointImportError(
                f"{shard_path} lacks keys {absent[:5]} that {path.name} puts there; the shard and the index"
                " are from different saves: restore the checkpoint folder"
            )
        state.update(tensors)
    return LoadedCheckpoint(state, sorted(set(skipped)))


def _epochs_of(steps: dict[int, Path], history: list[dict]) -> dict[int, float]:
    """Step -> epoch of each checkpoint, from the log entries at that step or the folder's own state."""
    by_step = {int(e["step"]): float(e["epoch"]) for e in history if isinstance(e.get("step"), int) and isinstance(e.get("epoch"), (int, float))}
    epochs = {}
    for step, folder in steps.items():
        if step in by_step:
            epochs[step] = by_step[step]
        elif (folder / STATE_NAME).is_file():
            own = _read_json(folder / STATE_NAME)
            if own.get("global_step") == step and isinstance(own.get("epoch"), (int, float)):
                epochs[step] = float(own["epoch"])
    return epochs


def _whole_epochs(steps: dict[int, Path], epochs: dict[int, float]) -> dict[int, int] | None:
    """Epoch -> step when every checkpoint sits at the end of a distinct whole epoch, else None."""
    if len(epochs) != len(steps) or any(abs(e - round(e)) > 1e-6 or round(e) < 1 for e in epochs.values()):
        return None
    whole = {round(e): step for step, e in epochs.items()}
    return whole if len(whole) == len(steps) else None


def missing_between(indices: list[int]) -> list[int]:
    """Indices that a regular save cadence would have written but are absent (``save_total_limit``
    deletes the oldest checkpoints): the most common gap, counted from the first multiple of it."""
    if len(indices) < 2:
        return []
    gap = Counter(b - a for a, b in zip(indices, indices[1:])).most_common(1)[0][0]
    start = indices[0] % gap or gap
    present = set(indices)
    return [i for i in range(start, indices[-1], gap) if i not in present]


class HfTrainerLayout:
    """``checkpoint-<step>/`` folders of the Hugging Face ``Trainer``."""

    name: ClassVar[str] = "hf-trainer"
    looks_for: ClassVar[str] = (
        "checkpoint-<step>/ folders holding model.safetensors (or shards with model.safetensors.index.json,"
        " or pytorch_model.bin), metrics from trainer_state.json"
    )

    def detect(self, source: Path) -> str | None:
        count = len(checkpoint_folders(source))
        return f"{count} checkpoint-<step>/ folders" if count else None

    def plan(self, source: Path, options: LayoutOptions) -> ImportPlan:
        folders = checkpoint_folders(source)
        if not folders:
            raise CheckpointImportError(
                f"{source} holds no checkpoint-<step>/ folders; pass the Trainer's output_dir"
            )
        weights = {step: _weights_file(folder) for step, folder in folders.items()}
        with_state = [step for step, folder in folders.items() if (folder / STATE_NAME).is_file()]
        history: list[dict] = []
        state_path = None
        if with_state:
            state_path = folders[with_state[-1]] / STATE_NAME
            history = [e for e in _read_json(state_path).get("log_history", []) if isinstance(e, dict)]
        whole = _whole_epochs(folders, _epochs_of(folders, history))
        index = "epoch" if whole is not None else "step"
        at_step = whole if whole is not None else {step: step for step in folders}
        notes = []
        if not with_state:
            notes.append(
                f"metrics: none; no checkpoint-<step>/ folder holds {STATE_NAME}, so the weights were imported"
                " indexed by step without metrics. Import a metrics file with the run, or record with"
                " sweetspot.integrations.hf.SweetspotCallback"
            )
        missing = missing_between(sorted(at_step))
        if missing:
            notes.append(
                f"{index}s {steps_text(missing)} have no checkpoint folder (save_total_limit deletes the oldest);"
                f" imported the {len(folders)} that are there. Keep every checkpoint"
                " (save_total_limit=None) to analyse the whole run"
            )
        entries = [
            CheckpointEntry(
                index=idx,
                path=weights[step],
                read=lambda path=weights[step]: read_weights(path, options.allow_globals),
                nbytes=_size(weights[step]),
                memory_mapped=weights[step].name.startswith("model.safetensors"),
            )
            for idx, step in sorted(at_step.items())
        ]

        def metrics(spec: Spec, report: ImportReport):
            if state_path is None:
                return None
            entries_at = [
                (float(e["step"]), e) for e in history
                if isinstance(e.get("step"), (int, float)) and "train_runtime" not in e
            ]
            return metrics_at_checkpoints(
                entries_at, {idx: float(step) for idx, step in at_step.items()}, spec, str(state_path), report,
                rename=RENAMED, skip=SKIPPED_KEYS,
            )

        return ImportPlan(self.name, index, entries, metrics, notes)


def _size(weights: Path) -> int:
    if not weights.name.endswith(".index.json"):
        return weights.stat().st_size
    shards = {str(s) for s in (_read_json(weights).get("weight_map") or {}).values()}
    return sum((weights.parent / s).stat().st_size for s in shards if (weights.parent / s).is_file())
