"""The entrypoints run as Ray jobs: submitted with `ray job submit` to a real local cluster's job
server with token authentication on (Ray reads RAY_AUTH_MODE when it loads, so the cluster and the
CLI run in processes of their own that start with the token in their environment)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RAY_CLI = Path(sys.executable).with_name("ray")

# Starts a one-CPU local cluster with its dashboard (job server) and keeps it until stdin closes.
CLUSTER = """
import sys, ray

ray.init(address="local", num_cpus=1, include_dashboard=True, dashboard_host="127.0.0.1",
         dashboard_port=int(sys.argv[1]), configure_logging=False)
print("ready", flush=True)
sys.stdin.read()
ray.shutdown()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def job_server():
    """(address, environment) of a local Ray job server that requires a token."""
    if not RAY_CLI.exists():
        pytest.skip(f"the ray CLI is not installed beside {sys.executable}")
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    env["PATH"] = f"{RAY_CLI.parent}{os.pathsep}{env.get('PATH', '')}"  # `python` in jobs = this env
    port = free_port()
    cluster = subprocess.Popen(
        [sys.executable, "-c", CLUSTER, str(port)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert cluster.stdout.readline().strip() == "ready", "the local Ray cluster did not start"
        yield f"http://127.0.0.1:{port}", env
    finally:
        cluster.stdin.close()
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            cluster.kill()


def submit(job_server, *command: str, timeout_s: float = 240) -> subprocess.CompletedProcess:
    address, env = job_server
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
    started = time.monotonic()
    done = submit(job_server, "python", "-m", "rayjobs.analyze_sweetspots",
                  "--checkpoint-dir", str(demo_run), "--output", str(output), "--no-plots")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    metrics = json.loads((output / "module_metrics.json").read_text())
    assert set(metrics["groups"]) == {
        "backbone", "heads", "analyzers", "dsp_kalman",
        "wrapper_emotion", "wrapper_bentham", "wrapper_surd", "wrapper_regret",
    }
    assert time.monotonic() - started < 240


def test_a_bad_input_fails_the_job_with_the_message(job_server, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_run"
    done = submit(job_server, "python", "-m", "rayjobs.analyze_sweetspots",
                  "--checkpoint-dir", str(missing), "--output", str(tmp_path / "out"))
    logs = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"error: --checkpoint-dir {missing} is not a folder" in logs
    assert "Traceback" not in logs


def test_the_job_server_refuses_a_wrong_token(job_server) -> None:
    address, env = job_server
    wrong = dict(env, RAY_AUTH_TOKEN=secrets.token_hex(32))
    done = subprocess.run(
        [str(RAY_CLI), "job", "list", "--address", address], env=wrong, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "Invalid authentication token" in done.stdout + done.stderr
