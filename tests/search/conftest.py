"""One local Ray per test session for the search tests (two fake GPUs), and the tiny real run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from tests.modules import _tiny


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, namespace="sweetspot", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_run_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny.record_run(tmp_path_factory.mktemp("tiny") / "run")
