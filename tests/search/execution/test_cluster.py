"""Starting a local Ray: no token banner on every command, token authentication kept."""

from __future__ import annotations

import logging
import os

import pytest
from ray._private.authentication import authentication_token_setup as ray_token_setup

from search.execution.cluster import RAY_AUTH_LOGGER, quiet_token_banner


def test_the_banner_ray_logs_for_a_local_cluster_is_dropped_and_nothing_else(caplog: pytest.LogCaptureFixture) -> None:
    """Ray's own function logs the banner (its wording is Ray's: a Ray that words it otherwise fails
    here). Inside the block it is dropped, other notices of that logger pass, and token
    authentication itself is left as Ray set it."""
    auth_mode = os.environ.get("RAY_AUTH_MODE")
    assert ray_token_setup.logger.name == RAY_AUTH_LOGGER
    with caplog.at_level(logging.WARNING, logger=RAY_AUTH_LOGGER):
        with quiet_token_banner():
            ray_token_setup._warn_token_auth_enabled()
            logging.getLogger(RAY_AUTH_LOGGER).warning("a token file could not be read")
        assert [r.getMessage() for r in caplog.records] == ["a token file could not be read"]
        ray_token_setup._warn_token_auth_enabled()  # after the block: Ray's logger is as it was
    assert "Token authentication is enabled" in caplog.records[-1].getMessage()
    assert os.environ.get("RAY_AUTH_MODE") == auth_mode


def test_trials_that_fit_count_as_ray_counts_fractions() -> None:
    from search.execution.cluster import trials_that_fit

    assert trials_that_fit(1.0, 0.1) == 10 and trials_that_fit(1.0, 0.2) == 5 and trials_that_fit(2.0, 0.1) == 20
    assert trials_that_fit(16.0, 3.0) == 5 and trials_that_fit(0.0, 1.0) == 0


def test_work_for_one_worker_runs_in_this_process_on_a_one_node_ray_even_one_named_by_address(ray_local: None) -> None:
    """A job's driver joins its cluster by address; on a one-node cluster it runs on that node, so
    rescoring a few candidates needs no process of its own there either."""
    import ray

    from search.execution.cluster import only_this_machine

    assert len([n for n in ray.nodes() if n["Alive"]]) == 1
    assert only_this_machine(None) and only_this_machine(ray.get_runtime_context().gcs_address)
