"""Shared fixtures: the demo spec and one real demo run (seed 0, 60 epochs, every 2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from modules.demo.spec import demo_spec as build_demo_spec
from modules.demo.train import train_demo
from modules.spec.schema import Spec

# The suite's models are tiny: one intra-op thread runs them fastest, and two threads on a busy
# 2-core machine spin waiting for each other (the demo's evaluate took minutes, not seconds).
# Set here, before any test, for this process and for the processes it starts (unless set already).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo trained once per test session with the defaults; the run directory's path (tests
    read it, never write it). Under pytest-xdist the workers share one: the first trains it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the folder every worker's base temp folder is in
    with FileLock(root / "demo-run.lock"):
        return train_demo(root / "demo-run", progress=False, reuse=True)


@pytest.fixture
def demo_spec() -> Spec:
    """The demo's spec (width 64, seed 0), as written into ``demo_run``."""
    return build_demo_spec()

