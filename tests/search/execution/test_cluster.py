"""Starting a local Ray: no token banner on every command, token authentication kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: What Ray 2.60 prints on every ray.init that starts a local cluster (token auth on by default).
TOKEN_BANNER = "Token authentication is enabled for this Ray cluster"
ROOT = Path(__file__).resolve().parents[3]
START = """
import os, ray
from search.execution.cluster import start_ray
start_ray(None)
print("auth mode:", os.environ.get("RAY_AUTH_MODE"))
ray.shutdown()
"""


def test_a_local_ray_we_start_prints_no_token_banner() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    done = subprocess.run(
        [sys.executable, "-c", START], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr
    assert TOKEN_BANNER not in done.stderr and "RAY_AUTH_MODE=disabled" not in done.stderr, done.stderr
    assert "auth mode: token" in done.stdout  # token authentication is still on, only not announced


def test_trials_that_fit_count_as_ray_counts_fractions() -> None:
    from search.execution.cluster import trials_that_fit

    assert trials_that_fit(1.0, 0.1) == 10 and trials_that_fit(1.0, 0.2) == 5 and trials_that_fit(2.0, 0.1) == 20
    assert trials_that_fit(16.0, 3.0) == 5 and trials_that_fit(0.0, 1.0) == 0
