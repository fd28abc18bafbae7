"""Store benchmark: reading one group from a run directory vs torch.load, and import throughput.

Run as ``python benchmarks/bench_store.py [--large-width 1216] [--epochs 5] [--dir /tmp]``.
Every figure is measured in this one run; temporary files are deleted at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import modules.rundir.safetensors_stream as safetensors_stream  # noqa: E402
from modules.demo.model import build_model  # noqa: E402
from modules.demo.spec import demo_spec  # noqa: E402
from modules.importing.importer import import_checkpoints  # noqa: E402
from modules.rundir.run_dir import RunDir, RunWriter  # noqa: E402

CHUNK = 1 << 24


def drop_cache(paths: list[Path]) -> str:
    """Evict ``paths`` from the page cache; returns the method that worked."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
        return "drop_caches"
    except OSError:
        pass
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages cannot be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return "posix_fadvise(DONTNEED)"


def all_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def read_bytes_raw(paths: list[Path]) -> int:
    """Read every byte of ``paths`` into one reused buffer; the raw read rate's reference."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while read := handle.readinto(view):
                total += read
    return total


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def write_checkpoints(folder: Path, width: int, epochs: int) -> tuple[int, int]:
    """Seed-layout checkpoints of the demo model with different weights per epoch; (params, bytes)."""
    folder.mkdir(parents=True)
    model = build_model(width=width, seed=0)
    params = sum(p.numel() for p in model.parameters())
    state = model.state_dict()
    for epoch in range(2, 2 * epochs + 1, 2):
        with torch.no_grad():
            for tensor in state.values():
                if tensor.is_floating_point():
                    tensor.mul_(0.999)
        torch.save({"model_state_dict": state, "epoch": epoch, "optimizer_state_dict": {}}, folder / f"checkpoint_epoch_{epoch}.pt")
    return params, sum(p.stat().st_size for p in folder.iterdir())


def materialize_group(run: RunDir, epoch: int, group: str) -> dict[str, torch.Tensor]:
    """Read one group and copy it into memory (safetensors maps lazily; this makes it comparable)."""
    return {k: t.clone() for k, t in run.read_group(epoch, group).items()}


def best_ms(action: Callable[[], object], repeat: int) -> float:
    """Fastest of ``repeat`` timings (least disturbed by other processes), in milliseconds."""
    return 1000 * min(timed(action) for _ in range(repeat))


def bench_size(label: str, width: int, epochs: int, root: Path, bar: tqdm) -> list[str]:
    """All measurements at one model size; returns the printed lines."""
    lines = []
    spec = demo_spec(width=width)
    source = root / f"seed-{label}"
    params, total = write_checkpoints(source, width, epochs)
    mb = total / 1e6
    lines.append(f"[{label}] demo model width {width}: {params / 1e6:.1f}M parameters, {epochs} checkpoints, {mb:.0f} MB")
    bar.update()

    # (b) import throughput vs raw read rate, cold then warm.
    checkpoints = sorted(source.glob("checkpoint_epoch_*.pt"))
    out = root / f"run-{label}"
    method = drop_cache(checkpoints)
    raw_cold = timed(lambda: read_bytes_raw(checkpoints))
    drop_cache(checkpoints)
    import_cold = timed(lambda: import_checkpoints(source, spec, out, progress=False))
    shutil.rmtree(out)
    read_bytes_raw(checkpoints)
    raw_warm = min(timed(lambda: read_bytes_raw(checkpoints)) for _ in range(3))
    import_warm = timed(lambda: import_checkpoints(source, spec, out, progress=False))
    copy_dir = root / f"copy-{label}"
    copy_dir.mkdir()

    def plain_copy() -> None:
        for path in checkpoints:
            shutil.copyfile(path, copy_dir / path.name)
            with open(copy_dir / path.name, "rb") as handle:
                os.fsync(handle.fileno())

    copy_warm = timed(plain_copy)
    shutil.rmtree(copy_dir)
    bar.update()
    lines.append(
        f"[{label}] import throughput cold ({method}): {mb / import_cold:.0f} MB/s vs raw read"
        f" {mb / raw_cold:.0f} MB/s: ratio {raw_cold / import_cold:.2f}"
    )
    lines.append(
        f"[{label}] import throughput warm: {mb / import_warm:.0f} MB/s vs raw read {mb / raw_warm:.0f} MB/s:"
        f" ratio {raw_warm / import_warm:.2f}"
    )
    lines.append(
        f"[{label}] plain file copy of the same checkpoints (copyfile + fsync, warm): {mb / copy_warm:.0f} MB/s;"
        f" import / copy ratio {copy_warm / import_warm:.2f}"
    )
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 3 * total:
        shm_root = Path(tempfile.mkdtemp(prefix="bench_store_", dir=shm))
        try:
            import_shm = timed(lambda: import_checkpoints(source, spec, shm_root / "run", progress=False))
        finally:
            shutil.rmtree(shm_root)
        lines.append(
            f"[{label}] import warm into tmpfs (no disk writes): {mb / import_shm:.0f} MB/s:"
            f" ratio to raw warm read {raw_warm / import_shm:.2f}"
        )

    lines.extend(bench_direct(label, source, spec, root, mb))
    bar.update()

    # (a) one group at one epoch from the run directory vs torch.load of the whole checkpoint.
    run = RunDir(out)
    epoch = run.epochs[len(run.epochs) // 2]
    group = "backbone"
    group_mb = run.group_nbytes(group) / 1e6
    checkpoint = source / f"checkpoint_epoch_{epoch}.pt"
    repeat = 9 if total < 50e6 else 3
    materialize_group(run, epoch, group)
    group_warm = best_ms(lambda: materialize_group(run, epoch, group), repeat)
    torch.load(checkpoint, map_location="cpu", weights_only=True)
    load_warm = best_ms(lambda: torch.load(checkpoint, map_location="cpu", weights_only=True), repeat)
    drop_cache([run.group_path(epoch, group)])
    group_cold = 1000 * timed(lambda: materialize_group(run, epoch, group))
    drop_cache([checkpoint])
    load_cold = 1000 * timed(lambda: torch.load(checkpoint, map_location="cpu", weights_only=True))
    lazy = best_ms(lambda: run.read_group(epoch, group), repeat)
    bar.update()
    lines.append(
        f"[{label}] read one group ({group}, {group_mb:.1f} MB) from run dir: {group_warm:.1f} ms;"
        f" torch.load whole checkpoint ({total / epochs / 1e6:.1f} MB): {load_warm:.1f} ms; ratio {load_warm / group_warm:.1f}x (warm)"
    )
    lines.append(
        f"[{label}] read one group ({group}, {group_mb:.1f} MB) from run dir: {group_cold:.1f} ms;"
        f" torch.load whole checkpoint: {load_cold:.1f} ms; ratio {load_cold / group_cold:.1f}x (cold, {method})"
    )
    lines.append(
        f"[{label}] (memory-mapped read_group without copying the tensors: {lazy:.2f} ms)"
    )
    shutil.rmtree(out)
    shutil.rmtree(source)
    return lines


def bench_direct(label: str, source: Path, spec: object, root: Path, mb: float) -> list[str]:
    """Group files written with O_DIRECT vs through the page cache: import (fsync once at the end)
    and durable epoch writes (the Recorder's path, fsync per file), best of 2, alternating."""
    if not hasattr(os, "O_DIRECT"):
        return [f"[{label}] O_DIRECT: not available on this OS"]
    run = RunDir(root / f"run-{label}")
    states = {e: {g: run.read_group(e, g) for g in run.groups} for e in run.epochs}
    group_keys = {g: run.group_keys(g) for g in run.groups}
    times: dict[tuple[str, bool], float] = {}
    out = root / f"direct-{label}"
    for _ in range(2):
        for direct in (True, False):
            safetensors_stream.USE_DIRECT = direct
            try:
                elapsed = timed(lambda: import_checkpoints(source, spec, out, progress=False))
                shutil.rmtree(out)
                times["import", direct] = min(times.get(("import", direct), math.inf), elapsed)

                def record() -> None:
                    writer = RunWriter.create(out, "bench", group_keys)
                    for epoch, state in states.items():
                        writer.write_epoch(epoch, state)

                elapsed = timed(record)
                shutil.rmtree(out)
                times["record", direct] = min(times.get(("record", direct), math.inf), elapsed)
            finally:
                safetensors_stream.USE_DIRECT = hasattr(os, "O_DIRECT")
    return [
        f"[{label}] {what} with O_DIRECT: {mb / times[what, True]:.0f} MB/s; through the page cache:"
        f" {mb / times[what, False]:.0f} MB/s; O_DIRECT speed-up {times[what, False] / times[what, True]:.2f}x"
        for what in ("import", "record")
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--demo-width", type=int, default=64)
    parser.add_argument("--large-width", type=int, default=1216, help="1216 gives ~101M parameters")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to write temporary files (default: the system temp dir)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench_store_", dir=args.dir))
    torch.set_num_threads(1)
    sizes = [("demo", args.demo_width), ("large", args.large_width)]
    lines = []
    try:
        with tqdm(total=4 * len(sizes), desc="bench_store", file=sys.stderr) as bar:
            for label, width in sizes:
                lines.extend(bench_size(label, width, args.epochs, root, bar))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
