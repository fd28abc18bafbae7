"""cluster.yaml passes Ray's own launcher checks, and deploy/kuberay/rayjob.yaml runs the same thing
on the same node shapes: image, Ray version, GPUs and CPUs per worker, object store, installs."""

from __future__ import annotations

import argparse
import math
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TORCH_PIN = "torch==2.13.0"  # what `make setup` installs and the suite runs on
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return load("cluster.yaml")


@pytest.fixture(scope="module")
def rayjob() -> dict[str, Any]:
    return load("deploy/kuberay/rayjob.yaml")


def gpu_type(cluster: dict[str, Any]) -> dict[str, Any]:
    (node,) = [n for n in cluster["available_node_types"].values() if n["resources"].get("GPU", 0) > 0]
    return node


def worker_group(rayjob: dict[str, Any]) -> dict[str, Any]:
    (group,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    return group


def container(pod_group: dict[str, Any]) -> dict[str, Any]:
    (one,) = pod_group["template"]["spec"]["containers"]
    return one


def entrypoint_args(rayjob: dict[str, Any]) -> list[str]:
    return shlex.split(rayjob["spec"]["entrypoint"])


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def gibibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity)).groups()
    scale = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[unit]
    return float(number) * scale / 2**30


def object_store_bytes(command: str) -> int:
    return int(re.search(r"--object-store-memory[= ](\d+)", command).group(1))


def test_cluster_yaml_passes_rays_launcher_schema(cluster: dict[str, Any]) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    # What `ray up` does before it asks the cloud for anything (commands._bootstrap_config).
    validate_config(prepare_config(cluster))
    # ... and the schema is strict: a misspelt key in a node type is refused.
    broken = yaml.safe_load(yaml.safe_dump(cluster))
    broken["available_node_types"]["gpu_worker"]["max_worker"] = 2
    with pytest.raises(Exception, match="max_worker"):
        validate_config(prepare_config(broken))


def test_cluster_has_a_cpu_head_and_an_autoscaled_gpu_worker_type(cluster: dict[str, Any]) -> None:
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu = gpu_type(cluster)
    assert gpu["resources"]["GPU"] >= 1 and gpu["resources"]["CPU"] >= 1
    assert 0 <= gpu["min_workers"] <= gpu["max_workers"] <= cluster["max_workers"]


def test_every_node_installs_cuda_torch_and_the_mounted_sweetspot(cluster: dict[str, Any]) -> None:
    setup = cluster["setup_commands"]  # every node type runs these
    assert any(TORCH_PIN in c and f"--index-url {CUDA_INDEX}" in c for c in setup), setup
    mounts = cluster["file_mounts"]
    code = next(remote for remote, local in mounts.items() if local == ".")
    assert any(re.search(rf"pip install .*-e {re.escape(code)}$", c) for c in setup), setup
    make = (REPO / "Makefile").read_text(encoding="utf-8")
    assert f"pip install --quiet {TORCH_PIN}" in make  # the torch the suite is tested with


def test_file_mounts_exist_and_the_spec_is_a_valid_spec(cluster: dict[str, Any]) -> None:
    from modules.demo.spec import demo_spec
    from modules.spec.schema import load_spec

    mounts = cluster["file_mounts"]
    for remote, local in mounts.items():
        if not local.startswith("~"):  # ~/... is the user's own file (the token), made by them
            assert (REPO / local).exists(), f"file_mounts {remote}: {local} is not in the repository"
    assert mounts["~/.ray/auth_token"] == "~/.ray/auth_token"
    spec = next(local for remote, local in mounts.items() if remote.endswith("sweetspot.yaml"))
    assert load_spec(REPO / spec) == demo_spec()  # the example spec stays the demo's own


def test_every_ray_start_turns_token_authentication_on(cluster: dict[str, Any]) -> None:
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cluster[key] if "ray start" in c]
        assert starts and all("export RAY_AUTH_MODE=token;" in c for c in starts), cluster[key]


def test_rayjob_runs_the_pipeline_with_flags_its_parser_accepts(rayjob: dict[str, Any]) -> None:
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True
    args = entrypoint_args(rayjob)
    assert args[:3] == ["python", "-m", "rayjobs.pipeline"]
    assert (REPO / flag(args, "--spec")).is_file()  # the working dir is the repository
    from rayjobs import pipeline

    parser = argparse.ArgumentParser(exit_on_error=False)
    pipeline.add_arguments(parser)  # the convention of every rayjobs entrypoint
    parsed, unknown = parser.parse_known_args(args[3:])
    assert not unknown, f"python -m rayjobs.pipeline does not take {unknown}"
    assert parsed.gpus_per_trial == float(flag(args, "--gpus-per-trial"))


def test_rayjob_has_token_auth_and_a_valid_runtime_env(rayjob: dict[str, Any]) -> None:
    from ray.runtime_env import RuntimeEnv

    assert rayjob["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    RuntimeEnv(**env)  # Ray's own validation of the runtime env
    assert env["working_dir"].endswith(".zip")


def test_rayjob_and_cluster_yaml_agree(cluster: dict[str, Any], rayjob: dict[str, Any]) -> None:
    from packaging.requirements import Requirement
    from packaging.version import Version

    from search.execution.config import SearchConfig

    spec = rayjob["spec"]["rayClusterSpec"]
    head, worker = spec["headGroupSpec"], worker_group(rayjob)
    image = cluster["docker"]["image"]
    assert container(head)["image"] == container(worker)["image"] == image

    # One Ray version: the image's tag, KubeRay's rayVersion, and within what pyproject requires.
    version = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py\d+-gpu", image).group(1)
    assert spec["rayVersion"] == version
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    ray_requirement = Requirement(re.search(r'"(ray\[[^"]+)"', pyproject).group(1))
    assert Version(version) in ray_requirement.specifier

    # Same worker shape: GPUs and CPUs per worker, how many, the object store the pool lives in.
    gpu = gpu_type(cluster)
    limits = container(worker)["resources"]["limits"]
    assert container(worker)["resources"]["requests"] == limits  # what Ray advertises is reserved
    assert int(limits["nvidia.com/gpu"]) == gpu["resources"]["GPU"]
    assert float(limits["cpu"]) == gpu["resources"]["CPU"]
    assert (worker["minReplicas"], worker["maxReplicas"]) == (gpu["min_workers"], gpu["max_workers"])
    store = int(worker["rayStartParams"]["object-store-memory"])
    worker_start = " ".join(cluster["worker_start_ray_commands"])
    assert object_store_bytes(worker_start) == store
    assert store >= SearchConfig().pool_memory  # the default --pool-memory fits in the store
    assert gibibytes(limits["memory"]) * 2**30 > 2 * store  # and leaves room for the trials

    # Trials the entrypoint asks for fill a worker's GPU without running out of its CPUs.
    args = entrypoint_args(rayjob)
    per_gpu = math.floor(1 / float(flag(args, "--gpus-per-trial")))
    assert per_gpu * float(flag(args, "--cpus-per-trial")) <= gpu["resources"]["CPU"]

    # Same installs: the CUDA torch the launcher installs, and sweetspot from the working dir.
    pip = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["pip"]
    assert TORCH_PIN in pip["packages"]
    assert CUDA_INDEX in pip["pip_install_options"]
    assert "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}" in pip["packages"]
