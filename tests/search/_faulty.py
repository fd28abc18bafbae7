"""The tiny model with faults on request: a worker that dies once, evaluations that take a while or raise."""

from __future__ import annotations

import os
import time
from typing import Any

from torch import nn

from modules.spec.schema import Spec, parse_spec
from tests.modules import _tiny


def build_model(
    seed: int = 0, crash_marker: str | None = None, delay: float = 0.0, calls_log: str | None = None, failures: int = 0,
    fail_in_process: int | None = None,
) -> nn.Module:
    model = _tiny.build_model(seed)
    model.crash_marker = crash_marker
    model.delay = delay
    model.calls_log, model.failures = calls_log, failures
    model.fail_in_process = fail_in_process
    return model


def evaluate(model: nn.Module, split: Any) -> dict:
    if getattr(model, "fail_in_process", None) == os.getpid():  # e.g. the driver's final evaluation only
        raise ValueError("planted failure in this process")
    if getattr(model, "calls_log", None):  # each call's process; the first ``failures`` calls raise
        with open(model.calls_log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        with open(model.calls_log) as handle:
            if len(handle.read().split()) <= model.failures:
                raise ValueError("planted\n  failure")  # two lines: a trial's error is one
    marker = getattr(model, "crash_marker", None)
    if marker and not os.path.exists(marker):
        with open(marker, "w") as handle:
            handle.write(str(os.getpid()))
        os._exit(1)  # the worker process dies mid-trial
    if getattr(model, "delay", 0.0):
        time.sleep(model.delay)
    return _tiny.evaluate(model, split)


def spec(couplings: list[dict] | None = None, **model_args: Any) -> Spec:
    data = dict(_tiny.SPEC)
    data.update(
        model="tests.search._faulty:build_model", evaluate="tests.search._faulty:evaluate",
        model_args=model_args, couplings=couplings or [],
    )
    return parse_spec(data, "faulty tiny spec")


def evaluate_without_objective(model: nn.Module, split: Any) -> dict:
    """A user's evaluate that forgot the objective ('loss')."""
    return {"mae": _tiny.evaluate(model, split)["mae"]}
