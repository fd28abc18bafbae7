"""Benchmark ``sweetspot combine`` against the seed's way (load every source checkpoint in full, copy).

    python benchmarks/bench_combine.py [--large-width 2048] [--epochs 3] [--skip-large]

Each combine runs in a fresh subprocess; peak RSS is its VmHWM. Sources go to a temporary folder
that is deleted at the end. The copy-rate line sets a pick-only combine (the run form, safetensors
output) against a plain copy of the same source files into one file (``os.sendfile``, as
``shutil.copyfile`` does, then fsync), each in a fresh process, once with the sources evicted from the
page cache (checkpoints written long ago) and once with them cached.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEMO_WIDTH = 64
LARGE_WIDTH = 2048  # ~286M parameters, > 1 GB float32 (modules.demo.model docstring)


def vm_hwm_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- source generation (in its own subprocess) ----------------------------------------------------


def make_sources(folder: Path, width: int, epochs: int) -> dict:
    """A run directory and seed-style ``checkpoint_epoch_<N>.pt`` files for ``epochs`` epochs."""
    import torch

    from modules.demo.model import build_model
    from modules.demo.spec import demo_spec, dump_spec
    from modules.rundir.run_dir import RunWriter

    spec = demo_spec(width=width)
    model = build_model(width=width)
    state = model.state_dict()
    keys = spec.assign_groups(state)
    writer = RunWriter.create(folder / "run", spec.name, keys)
    writer.write_spec_text(dump_spec(spec))
    for epoch in range(1, epochs + 1):
        with torch.no_grad():
            for tensor in state.values():
                if tensor.is_floating_point():
                    tensor.mul_(1.0 + 0.01 * epoch)
        writer.write_epoch(epoch, {g: {k: state[k] for k in ks} for g, ks in keys.items()})
        torch.save({"epoch": epoch, "model_state_dict": state}, folder / f"checkpoint_epoch_{epoch}.pt")
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    return {"groups": list(keys), "nbytes": nbytes, "params": sum(p.numel() for p in model.parameters())}


# -- workers: one combine each, in a fresh process ------------------------------------------------


def worker_sweetspot_run(folder: Path, choice: dict, out: Path) -> float:
    from modules.combine.combine import write_combined
    from modules.combine.plan import (
        plan_from_run,
        selection_epochs,
    )
    from modules.rundir.run_dir import RunDir
    from modules.spec.selection import parse_selection

    start = time.perf_counter()
    run = RunDir(folder / "run")
    selection = parse_selection(choice)
    write_combined(plan_from_run(run, selection_epochs(selection, run), selection.to_json()), out)
    return time.perf_counter() - start


def worker_sweetspot_files(folder: Path, choice: dict, out: Path) -> float:
    from modules.combine.combine import write_combined
    from modules.combine.plan import plan_from_files
    from modules.spec.schema import load_spec

    start = time.perf_counter()
    spec = load_spec(folder / "run" / "sweetspot.yaml")
    files = {g: folder / f"checkpoint_epoch_{e}.pt" for g, e in choice.items()}
    write_combined(plan_from_files(spec, files), out)
    return time.perf_counter() - start


def worker_seed_way(folder: Path, choice: dict, out: Path) -> float:
    """The seed's way: torch.load each source checkpoint in full, copy the group's tensors, save."""
    import torch

    import modules.combine.combine  # noqa: F401  same imports as sweetspot, so the interpreter baselines match
    from modules.spec.schema import load_spec

    start = time.perf_counter()
    spec = load_spec(folder / "run" / "sweetspot.yaml")
    combined = {}
    for group, epoch in choice.items():
        source = torch.load(folder / f"checkpoint_epoch_{epoch}.pt", map_location="cpu", weights_only=True)["model_state_dict"]
        for key in spec.assign_groups(source)[group]:
            combined[key] = source[key].clone()
        del source
    torch.save(combined, out)
    with open(out, "rb+") as handle:
        os.fsync(handle.fileno())
    return time.perf_counter() - start


def worker_copy(folder: Path, choice: dict, out: Path) -> float:
    """A plain copy of the files a pick-only combine of ``choice`` reads, into one file, fsynced."""
    from modules.rundir.run_dir import RunDir

    run = RunDir(folder / "run")
    sources = [run.group_path(epoch, group) for group, epoch in choice.items()]
    start = time.perf_counter()
    with open(out, "wb") as dst:
        for path in sources:
            with open(path, "rb") as src:
                size, sent = os.fstat(src.fileno()).st_size, 0
                while sent < size:
                    sent += os.sendfile(dst.fileno(), src.fileno(), sent, size - sent)
        os.fsync(dst.fileno())
    return time.perf_counter() - start


def worker_idle(folder: Path, choice: dict, out: Path) -> float:
    import torch  # noqa: F401

    import modules.combine.combine  # noqa: F401

    return 0.0


WORKERS = {
    "sweetspot": worker_sweetspot_run,
    "sweetspot-pt": worker_sweetspot_files,
    "seed": worker_seed_way,
    "copy": worker_copy,
    "idle": worker_idle,
}


def page_cache(folder: Path, choice: dict | None) -> None:
    """Evict every file under ``folder`` from the page cache; then, with a pick-only ``choice``, read
    the run's files it picks once so that they are cached."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    for group, epoch in (choice or {}).items():
        with open(folder / "run" / "epochs" / str(epoch) / f"{group}.safetensors", "rb") as handle:
            while handle.read(1 << 24):
                pass


def measure(kind: str, folder: Path, choice: dict, out: Path, cached: bool = False) -> dict:
    """Run one worker in a fresh interpreter, the sources evicted from the page cache first (unless
    ``cached``); its seconds, peak RSS (MB) and bytes written."""
    page_cache(folder, choice if cached else None)
    command = [sys.executable, __file__, "--worker", kind, str(folder), json.dumps(choice), str(out)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["bytes"] = out.stat().st_size if out.exists() else 0
    if out.exists():
        out.unlink()
    return result


def bench(name: str, width: int, epochs: int, root: Path) -> None:
    folder = root / name
    folder.mkdir()
    subprocess.run([sys.executable, __file__, "--make", str(folder), str(width), str(epochs)], check=True)
    info = json.loads((folder / "info.json").read_text())
    groups = info["groups"]
    picks = {g: 1 + i % epochs for i, g in enumerate(groups)}
    model_mb = info["nbytes"] / 2**20
    idle = measure("idle", folder, picks, root / "none")
    sweet = measure("sweetspot", folder, picks, root / "out.safetensors")
    seed = measure("seed", folder, picks, root / "out.pt")
    sweet_pt = measure("sweetspot-pt", folder, picks, root / "out2.pt")
    averaged = dict(picks, backbone={"average": [1, epochs]})
    sweet_avg = measure("sweetspot", folder, averaged, root / "out3.safetensors")
    print(
        f"{name}: sweetspot {sweet['seconds']:.2f} s / {sweet['peak_mb']:.0f} MB peak;"
        f" seed way {seed['seconds']:.2f} s / {seed['peak_mb']:.0f} MB peak;"
        f" ratio time {seed['seconds'] / sweet['seconds']:.1f}x, memory {seed['peak_mb'] / sweet['peak_mb']:.1f}x"
    )
    print(
        f"  {name} details: {info['params'] / 1e6:.1f}M params, model {model_mb:.0f} MB, {len(groups)} groups,"
        f" {epochs} source epochs; interpreter alone {idle['peak_mb']:.0f} MB."
        f" Peak above interpreter / model bytes: sweetspot {(sweet['peak_mb'] - idle['peak_mb']) / model_mb:.2f}x,"
        f" seed way {(seed['peak_mb'] - idle['peak_mb']) / model_mb:.2f}x"
    )
    print(
        f"  {name} other forms: sweetspot over seed .pt files (mmap, .pt output) {sweet_pt['seconds']:.2f} s /"
        f" {sweet_pt['peak_mb']:.0f} MB peak; backbone averaged over {epochs} epochs"
        f" {sweet_avg['seconds']:.2f} s / {sweet_avg['peak_mb']:.0f} MB peak"
    )
    rates = []
    for cached in (False, True):
        copy = measure("copy", folder, picks, root / "copy.bin", cached)
        ours = measure("sweetspot", folder, picks, root / "out4.safetensors", cached)
        rates.append((copy, ours, (ours["bytes"] / ours["seconds"]) / (copy["bytes"] / copy["seconds"])))
    (copy, ours, ratio), (copy_w, ours_w, ratio_w) = rates
    print(
        f"  {name} copy rate: sweetspot {ours['bytes'] / 1e9:.2f} GB in {ours['seconds']:.2f} s"
        f" = {ours['bytes'] / 1e9 / ours['seconds']:.2f} GB/s, plain copy of the same bytes"
        f" {copy['bytes'] / 1e9:.2f} GB in {copy['seconds']:.2f} s = {copy['bytes'] / 1e9 / copy['seconds']:.2f} GB/s:"
        f" ratio {ratio:.2f} (sources not cached); cached {ours_w['bytes'] / 1e9 / ours_w['seconds']:.2f} against"
        f" {copy_w['bytes'] / 1e9 / copy_w['seconds']:.2f} GB/s: ratio {ratio_w:.2f}. Peak RSS / model bytes"
        f" {max(ours['peak_mb'], ours_w['peak_mb']) / model_mb:.2f}x"
        f" ({max(ours['peak_mb'], ours_w['peak_mb']) - idle['peak_mb']:.0f} MB above the interpreter)"
    )
    shutil.rmtree(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-width", type=int, default=LARGE_WIDTH)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--worker", nargs=4, metavar=("KIND", "FOLDER", "CHOICE", "OUT"))
    parser.add_argument("--make", nargs=3, metavar=("FOLDER", "WIDTH", "EPOCHS"))
    args = parser.parse_args()
    if args.worker:
        kind, folder, choice, out = args.worker
        seconds = WORKERS[kind](Path(folder), json.loads(choice), Path(out))
        print(json.dumps({"seconds": seconds, "peak_mb": vm_hwm_mb()}))
        return 0
    if args.make:
        folder, width, epochs = Path(args.make[0]), int(args.make[1]), int(args.make[2])
        info = make_sources(folder, width, epochs)
        (folder / "info.json").write_text(json.dumps(info))
        return 0
    root = Path(tempfile.mkdtemp(prefix="bench_combine_"))
    free_gb = shutil.disk_usage(root).free / 1e9
    print(f"temp folder {root}: {free_gb:.0f} GB free")
    try:
        bench("demo", DEMO_WIDTH, args.epochs, root)
        if not args.skip_large:
            needed = 2 * args.epochs * 1.2 + 3 * 1.2
            if free_gb < needed:
                print(f"large: skipped, needs ~{needed:.0f} GB free in {root}")
            else:
                bench(f"large (width {args.large_width})", args.large_width, args.epochs, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
