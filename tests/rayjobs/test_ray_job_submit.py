"""The entrypoints run as Ray jobs: submitted with `ray job submit` to a real local cluster's job
server with token authentication on (Ray reads RAY_AUTH_MODE when it loads, so the cluster and the
CLI run in processes of their own that start with the token in their environment). A search job's
trials run on that cluster, and a job submitted without the token never runs."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest

from tests.modules import _tiny

REPO = Path(__file__).resolve().parents[2]
RAY_CLI = Path(sys.executable).with_name("ray")

# The id of the node a driver lands on when it joins the cluster at argv[1].
NODE_ID = """
import sys, ray

ray.init(address=sys.argv[1], configure_logging=False, log_to_driver=False)
print(ray.get_runtime_context().get_node_id(), flush=True)
"""


class JobServer(NamedTuple):
    address: str
    env: dict[str, str]
    node_id: str


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def job_server():
    """A one-CPU local Ray cluster whose job server requires a token: its address, an environment
    holding the token, and the node id of its one node (every task on it, and on no other Ray,
    reports that id).

    Started with `ray start --head --block` so that every port Ray would otherwise take at a fixed
    default (GCS 6379, client 10001, dashboard 8265, dashboard agent 52365) is a free one, and with
    a temp dir of its own: the job server points a job's driver at the newest Ray of its temp dir,
    and other tests (or other users of this machine) start Rays in the default /tmp/ray."""
    if not RAY_CLI.exists():
        pytest.skip(f"the ray CLI is not installed beside {sys.executable}")
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    env["PATH"] = f"{RAY_CLI.parent}{os.pathsep}{env.get('PATH', '')}"  # `python` in jobs = this env
    gcs, dashboard, agent, client = free_ports(4)
    temp_dir = tempfile.mkdtemp(prefix="rayjobs-")  # short: Ray's socket paths live under it
    log = open(os.path.join(temp_dir, "ray-start.log"), "w")
    head = subprocess.Popen(
        [str(RAY_CLI), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=1", "--num-gpus=0",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        joined = subprocess.run(
            [sys.executable, "-c", NODE_ID, f"127.0.0.1:{gcs}"], env=env, capture_output=True, text=True, timeout=180
        )
        node_id = joined.stdout.strip()
        assert joined.returncode == 0 and node_id, f"the local Ray cluster did not start: {joined.stderr[-2000:]}"
        yield JobServer(f"http://127.0.0.1:{dashboard}", env, node_id)
    finally:
        head.terminate()  # `ray start --block` stops its cluster on SIGTERM
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(job_server: JobServer, *command: str, timeout_s: float = 240, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    address = job_server.address
    env = job_server.env if env is None else env
    deadline = time.monotonic() + timeout_s
    while True:
        done = subprocess.run(
            [str(RAY_CLI), "job", "submit", "--address", address, "--working-dir", str(REPO), "--", *command],
            env=env, capture_output=True, text=True, timeout=timeout_s,
        )
        # The job agent starts a little after the dashboard; on a busy machine, ask again.
        if "No available agent to submit job" not in done.stdout + done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(2)


def test_analyze_runs_as_a_ray_job(job_server, demo_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "analysis_results"
    done = submit(job_server, "python", "-m", "rayjobs.analyze_sweetspots",
                  "--checkpoint-dir", str(demo_run), "--output", str(output), "--no-plots")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    metrics = json.loads((output / "module_metrics.json").read_text())
    assert set(metrics["groups"]) == {
        "backbone", "heads", "analyzers", "dsp_kalman",
        "wrapper_emotion", "wrapper_bentham", "wrapper_surd", "wrapper_regret",
    }


def test_a_bad_input_fails_the_job_with_the_message(job_server, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_run"
    done = submit(job_server, "python", "-m", "rayjobs.analyze_sweetspots",
                  "--checkpoint-dir", str(missing), "--output", str(tmp_path / "out"))
    logs = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"error: --checkpoint-dir {missing} is not a folder" in logs
    assert "Traceback" not in logs


def test_the_job_server_refuses_a_wrong_token(job_server: JobServer) -> None:
    wrong = dict(job_server.env, RAY_AUTH_TOKEN=secrets.token_hex(32))
    done = subprocess.run(
        [str(RAY_CLI), "job", "list", "--address", job_server.address], env=wrong, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "Invalid authentication token" in done.stdout + done.stderr


def test_a_search_job_runs_its_trials_on_the_cluster_it_was_submitted_to(job_server: JobServer, tmp_path: Path) -> None:
    run = _tiny.record_run(tmp_path / "run")
    output = tmp_path / "search"
    done = submit(job_server, "python", "-m", "rayjobs.search_crossover", "--checkpoint-dir", str(run),
                  "--output", str(output), "--trust-run-spec", "--num-samples", "4", "--no-baselines", "--no-evaluate", "--no-progress")
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs[-3000:]
    # 4 sampler trials, then the analysis pick and the last epoch on top (--no-baselines: no soup)
    assert "6 trials in" in logs and f"wrote {output}/search_report.md" in logs
    for name in ("trials.parquet", "best_selection.json", "search_summary.json", "search_report.md"):
        assert (output / name).is_file(), name
    trials = pd.read_parquet(output / "trials.parquet")
    assert len(trials) == 6
    # A search that started a Ray of its own would report that Ray's node, not the job server's.
    assert set(trials["node"]) == {job_server.node_id}
    selection = json.loads((output / "best_selection.json").read_text())
    assert {k for k in selection if not k.startswith("_")} == {"encoder", "middle", "head"}


def test_a_job_without_the_token_is_refused_and_never_runs(job_server: JobServer, tmp_path: Path) -> None:
    home = tmp_path / "home"  # no ~/.ray/auth_token there
    home.mkdir()
    bare = {k: v for k, v in job_server.env.items() if not k.startswith("RAY_AUTH_")}
    marker = tmp_path / "ran"
    done = submit(job_server, "python", "-c", f"open({str(marker)!r}, 'w')", env=dict(bare, HOME=str(home)), timeout_s=60)
    logs = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Unauthorized: Missing authentication token" in logs, logs[-3000:]
    assert not marker.exists()
