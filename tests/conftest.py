"""Shared fixtures: the demo spec and one real demo run (seed 0, 60 epochs, every 2)."""

from __future__ import annotations

import gc
import os
import shutil
import socket
import sys
import tempfile
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


def _default_ray_pointer() -> Path:
    """The file a `ray start` or `ray.cluster_utils.Cluster` names its cluster in, where a user's
    plain `ray.init()` looks for one (Ray's rule: $RAY_TMPDIR, else $TMPDIR on Linux, else /tmp)."""
    system = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return Path(system or "/tmp") / "ray" / "ray_current_cluster"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


# The suite leaves Ray's state on the machine as it found it, and writes nothing into the user's
# home: every Ray it starts (here and in the processes it starts, which inherit the environment)
# keeps its sessions and its `ray_current_cluster` pointer in a temp folder of the suite's own, and
# sweetspot's record of the search folders a user wrote goes there too. The first process sets it
# up (under pytest-xdist the controller, before the workers start) and removes it at the end.
DEFAULT_RAY_POINTER = Path(os.environ.get("SWEETSPOT_TEST_DEFAULT_RAY_POINTER") or _default_ray_pointer())
_OWNER = "SWEETSPOT_TEST_TMP" not in os.environ
if _OWNER:
    _POINTER_BEFORE = _read(DEFAULT_RAY_POINTER)
    os.environ["SWEETSPOT_TEST_DEFAULT_RAY_POINTER"] = str(DEFAULT_RAY_POINTER)
    os.environ["SWEETSPOT_TEST_TMP"] = tempfile.mkdtemp(prefix="sst-")  # short: Ray's socket paths live under it
    os.environ["RAY_TMPDIR"] = os.environ["SWEETSPOT_TEST_TMP"]
    os.environ["SWEETSPOT_STATE_DIR"] = os.path.join(os.environ["SWEETSPOT_TEST_TMP"], "state")
    # Every temporary file of the processes the suite starts (pytest's workers and their temp
    # folders, Ray's workers, drivers killed on purpose, which leave multiprocessing's pymp-*
    # folders behind) goes in there too, and is removed with it.
    os.environ["TMPDIR"] = os.path.join(os.environ["SWEETSPOT_TEST_TMP"], "tmp")
    os.makedirs(os.environ["TMPDIR"])
    tempfile.tempdir = None  # read TMPDIR again
SUITE_TMP = Path(os.environ["SWEETSPOT_TEST_TMP"])


def _answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except (OSError, ValueError):
        return False
    return True


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when Ray's pointer file now names a cluster that is gone: a user's plain
    `ray.init(num_cpus=2)` would refuse to start, and `ray.init()` would try to reach it."""
    if not _OWNER:
        return
    after = _read(DEFAULT_RAY_POINTER)
    if after and after != _POINTER_BEFORE and not _answers(after):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (
            f"the suite left {DEFAULT_RAY_POINTER} naming the cluster {after}, which no longer exists"
            f" (it named {_POINTER_BEFORE!r} before): a Ray was started outside the suite's temp folder"
        )
        if reporter is not None:
            reporter.write_line(f"ERROR: {message}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


#: The files that take longest (seconds of one worker, measured on 2 cores), run first: xdist hands
#: files to workers in collection order, and a minute-long file started last runs alone at the end.
#: Files that mostly wait (jobs, a lost node, the memo's gates) come where the other worker is busy:
#: the pipeline beside the job server's, the search's beside the faults'.
#: (The Makefile turns off xdist's own order, which puts files with the most tests first.)
LONGEST_FIRST = [
    "tests/search/workflow/test_pipeline.py",  # 74 s
    "tests/rayjobs/test_ray_job_submit.py",  # 69 s, and it trains the shared demo run
    "tests/search/execution/test_search.py",  # 43 s
    "tests/search/execution/test_faults.py",  # 49 s
    "tests/search/execution/test_memo_gate.py",  # 11 s, mostly waiting: not alone at the end
    "tests/rayjobs/test_combine_evaluate_cli.py",  # 25 s
    "tests/search/calibration/test_calibrate.py",  # 23 s
    "tests/search/tracking/test_tracking.py",  # 18 s
    "tests/modules/demo/test_demo.py",  # 14 s
    "tests/search/execution/test_cluster.py",  # 12 s
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: index for index, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OWNER:
        shutil.rmtree(SUITE_TMP, ignore_errors=True)
    # As the commands' processes end (rayjobs._entry.exit_process): the interpreter's last garbage
    # collections would walk every object of the suite's imports (about a second of CPU per worker).
    gc.freeze()


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

