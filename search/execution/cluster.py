"""Joining or starting Ray, and the per-node checkpoint pools a search keeps alive."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import ray

from search.errors import SearchError
from search.execution.config import SearchConfig
from search.execution.memo import NAMESPACE as POOL_NAMESPACE
from search.execution.pool import CheckpointPool, pool_name


def check_reachable(address: str, seconds: float = 5.0) -> None:
    """Fail fast on a ``host:port`` (or ``ray://host:port``) nobody answers at: ray.init would
    otherwise wait for minutes."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as error:
        raise SearchError(
            f"{address}: no Ray cluster answers there ({error}); start it with `ray start --head`,"
            " check the host and port, or leave the address out to run a local Ray",
            param="address",
        ) from None


#: The logger Ray's token-authentication notices go through (ray/_private/authentication/authentication_token_setup.py).
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
#: The notice Ray prints whenever ``ray.init`` starts a local cluster with token auth on by default.
TOKEN_BANNER = "Token authentication is enabled for this Ray cluster"


class _NoTokenBanner(logging.Filter):
    """Drops Ray's token-auth banner and nothing else (token auth itself stays on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(TOKEN_BANNER)


@contextlib.contextmanager
def quiet_token_banner() -> Iterator[None]:
    """While a local cluster sweetspot starts itself comes up: no token banner on every command. The
    cluster and its token live and die with this process, so there is nothing for the user to act on."""
    logger, banner = logging.getLogger(RAY_AUTH_LOGGER), _NoTokenBanner()
    logger.addFilter(banner)
    try:
        yield
    finally:
        logger.removeFilter(banner)


#: Modules a local ``ray.init`` imports itself (Ray 2.60): imported on this thread before the
#: background imports start, so the two threads never import the same modules at once (an import
#: cycle between threads is a deadlock error in one of them).
RAY_START_MODULES = (
    "ray.dashboard.optional_deps",
    "ray.autoscaler.v2.utils",
    "ray._common.usage.usage_lib",
    "ray._private.thirdparty.pynvml",
    "ray._private.runtime_env.uv_runtime_env_hook",
)


def start_ray(address: str | None, meanwhile: Iterable[str] = ()) -> None:
    """Join ``address`` (``auto`` or ``ray://...``; inside a Ray job, the job's cluster), or start a
    local Ray (never a stray local cluster by accident). The modules named in ``meanwhile`` are
    imported while Ray starts (``importing_meanwhile``)."""
    if not ray.is_initialized():
        if address is None and not os.environ.get("RAY_ADDRESS"):
            address = "local"  # never join a stray local cluster by accident
        elif address is not None:
            check_reachable(address)
        try:
            local = {"include_dashboard": False} if address == "local" else {}  # saves seconds of start
            with (
                quiet_token_banner() if address == "local" else contextlib.nullcontext(),
                importing_meanwhile(meanwhile, first=RAY_START_MODULES),
            ):
                ray.init(address=address, namespace=POOL_NAMESPACE, log_to_driver=False, configure_logging=False, **local)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise SearchError(
                f"cannot reach the Ray cluster at address {address!r} ({error}); start it with"
                " `ray start --head` or leave the address out to run a local Ray"
            ) from None


def alive_nodes() -> list[dict[str, Any]]:
    """The cluster's nodes that are alive now (``ray.nodes()`` keeps the dead ones too)."""
    return [node for node in ray.nodes() if node.get("Alive")]


def only_this_machine(address: str | None) -> bool:
    """Whether Ray would run the work on this machine anyway: the Ray this process is connected to
    is one node, this one (a local Ray, or a one-node cluster a job's driver runs on); before Ray
    starts, that no cluster is named (``address``, ``RAY_ADDRESS``). Work for one worker then runs
    in this process, without a process of its own to start."""
    if not ray.is_initialized():
        return address is None and not os.environ.get("RAY_ADDRESS")
    if ray.util.client.ray.is_connected():
        return False
    alive = alive_nodes()
    return len(alive) == 1 and alive[0]["NodeID"] == ray.get_runtime_context().get_node_id()


def start_ray_for_search(address: str | None, config: SearchConfig, meanwhile: Iterable[str] = ()) -> None:
    """``start_ray`` (importing ``meanwhile`` as it starts), then check that a node has the CPUs and
    GPUs a trial asks for."""
    start_ray(address, meanwhile)
    check_resources(config.cpus_per_trial, config.gpus_per_trial, "per trial")


@contextlib.contextmanager
def importing_meanwhile(names: Iterable[str], first: Iterable[str] = ()) -> Iterator[None]:
    """Import ``names`` on a thread while the block runs, and wait for them at its end; ``first``,
    the modules the block itself imports, on this thread before that.

    A local Ray's start is seconds of this process waiting for Ray's own processes to come up, with
    a core to spare: the modules the driver needs only afterwards load in that time. A module that
    fails to import here is left for the code that needs it to import, and fail, in its own place."""
    names = [n for n in names if n not in sys.modules]
    if not names:
        yield
        return
    for name in first:
        with contextlib.suppress(ImportError):  # Ray's own modules: where this Ray keeps them
            importlib.import_module(name)

    def load() -> None:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception as error:  # noqa: BLE001 - the code that needs it imports it again
                logging.getLogger(__name__).debug("importing %s beside Ray's start failed: %s", name, error)

    thread = threading.Thread(target=load, name="sweetspot-imports", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def check_resources(cpus: float, gpus: float, unit: str) -> None:
    """Refuse CPUs or GPUs per task that no node of the cluster has (Ray would wait forever)."""
    nodes = [n.get("Resources", {}) for n in alive_nodes()]
    most_cpus = max((r.get("CPU", 0) for r in nodes), default=0)
    most_gpus = max((r.get("GPU", 0) for r in nodes), default=0)
    if gpus > 0 and most_gpus == 0:
        raise SearchError(
            f"gpus {unit} is {gpus:g} but the Ray cluster has no GPUs; use 0 to score on CPUs, or join a"
            " cluster with GPUs"
        )
    if gpus > most_gpus:
        raise SearchError(f"gpus {unit} is {gpus:g} but no node of the cluster has more than {most_gpus:g}")
    if cpus > most_cpus:
        raise SearchError(
            f"cpus {unit} is {cpus:g} but no node of the cluster has more than {most_cpus:g}; lower it"
            " (a task asking for more than a node has would wait forever)"
        )


def trials_that_fit(total: float, each: float) -> int:
    """How many of ``each`` fit in ``total``, counted as Ray counts (units of 1e-4): ten trials of
    0.1 GPU fit one GPU, where ``1.0 // 0.1`` is 9."""
    return int(round(total * 10_000)) // int(round(each * 10_000))


def worker_slots(cpus: float, gpus: float, limit: int) -> int:
    """Trials of ``cpus`` and ``gpus`` each that the alive nodes run at once, at most ``limit``."""
    slots = 0
    for node in alive_nodes():
        resources = node.get("Resources", {})
        on_cpus = trials_that_fit(resources.get("CPU", 0), cpus)
        slots += min(on_cpus, trials_that_fit(resources.get("GPU", 0), gpus)) if gpus > 0 else on_cpus
    return max(1, min(slots, limit))


def create_pools(search_id: str, run_path: str, capacity: int) -> list[Any]:
    """A pool on every alive node, owned by the driver (trial workers find it by name); the
    handles must be kept: a named actor dies with the last reference to it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return [
        CheckpointPool.options(
            name=pool_name(search_id, node["NodeID"]), namespace=POOL_NAMESPACE, get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote(run_path, capacity)
        for node in alive_nodes()
        if node.get("Resources", {}).get("CPU", 0) > 0
    ]
