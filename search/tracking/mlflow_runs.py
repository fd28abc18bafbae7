"""``--mlflow URI``: one parent MLflow run per command, a child run per trial, the outputs as artifacts.

The runs go to the experiment named by ``MLFLOW_EXPERIMENT_NAME`` (default ``sweetspot``). A command
inside another (the pipeline's search and auto) opens its run nested under the outer one. Child
runs are written from the trials table when the search ends, so a resumed search (whose Tune
callbacks are the pickled ones of its first start) still gets one child per trial.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from search.errors import SearchError

EXPERIMENT = "sweetspot"
#: Output files logged as artifacts (the reports, plots and small JSON documents).
ARTIFACT_SUFFIXES = (".md", ".png", ".json", ".parquet")
#: Sub-folders never logged (Tune's own state).
SKIPPED = ("tune",)


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise SearchError(
            "--mlflow needs the mlflow package: pip install 'sweetspot[tracking]'", param="mlflow"
        ) from None
    return mlflow


class Tracker:
    """The command's MLflow run (``run_id``); ``None`` stands for "no tracking" everywhere."""

    def __init__(self, mlflow: Any, run: Any) -> None:
        self.mlflow = mlflow
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id
        self.client = mlflow.MlflowClient()

    def params(self, values: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(str(k)[:250], _text(v)) for k, v in values.items() if v is not None]
        for start in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def metrics(self, values: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, metrics=_metrics(values))

    def child(self, name: str, params: Mapping[str, Any], metrics: Mapping[str, Any], status: str = "FINISHED") -> str:
        """A child run of this one, complete at once (``status`` FINISHED, FAILED or KILLED)."""
        from mlflow.entities import Param

        run = self.client.create_run(
            self.experiment_id, run_name=name, tags={"mlflow.parentRunId": self.run_id, "sweetspot.kind": "trial"}
        )
        params_list = [Param(str(k)[:250], _text(v)) for k, v in params.items() if v is not None]
        self.client.log_batch(run.info.run_id, metrics=_metrics(metrics), params=params_list[:100])
        self.client.set_terminated(run.info.run_id, status=status)
        return run.info.run_id

    def artifacts(self, folder: Path, under: str | None = None, only: list[str] | None = None) -> list[str]:
        """The reports, plots and JSON documents in ``folder`` and its sub-folders (Tune's left out;
        with ``only``, just those files and folders of it)."""
        logged = []
        folder = Path(folder)
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if not path.is_file() or path.suffix not in ARTIFACT_SUFFIXES or relative.parts[0] in SKIPPED:
                continue
            if only is not None and relative.parts[0] not in only:
                continue
            parent = relative.parent.as_posix()
            target = "/".join(p for p in (under, None if parent == "." else parent) if p)
            self.client.log_artifact(self.run_id, str(path), target or None)
            logged.append(relative.as_posix())
        return logged


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]


def _metrics(values: Mapping[str, Any]) -> list[Any]:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    out = []
    for key, value in values.items():
        if isinstance(value, bool) or value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out.append(Metric(str(key), number, now, 0))
    return out


def tracking_uri(uri: str | os.PathLike[str]) -> str:
    """``uri`` as MLflow takes it: a plain path is a folder holding ``mlflow.db`` (sqlite; MLflow 3
    refuses its old folder store), or a ``.db`` file itself; URIs (``sqlite:///``, ``http://``,
    ``databricks``) are kept."""
    text = str(uri)
    if "://" in text or text in ("databricks",):
        return text
    path = Path(text).expanduser().resolve()
    if path.suffix != ".db":
        path.mkdir(parents=True, exist_ok=True)
        path = path / "mlflow.db"
    elif not path.parent.is_dir():
        raise SearchError(f"{uri}: folder {path.parent} does not exist; create it or name another file", param="mlflow")
    return f"sqlite:///{path}"


def _artifact_root(uri: str) -> str | None:
    """``<database folder>/mlartifacts`` for a local sqlite store; None (the server's choice) otherwise."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()


@contextlib.contextmanager
def mlflow_run(uri: str | os.PathLike[str] | None, name: str, kind: str) -> Iterator[Tracker | None]:
    """Open the command's MLflow run at ``uri`` (nested under an active one), or nothing without a URI.

    The run ends FINISHED, or FAILED when the command raised (KILLED on Ctrl-C)."""
    if uri is None:
        yield None
        return
    mlflow = _mlflow()
    uri = tracking_uri(uri)
    nested = mlflow.active_run() is not None
    if not nested:
        mlflow.set_tracking_uri(uri)
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        if mlflow.get_experiment_by_name(experiment) is None:
            # A local database keeps its artifacts beside it, not in ./mlruns of wherever the command ran.
            mlflow.create_experiment(experiment, artifact_location=_artifact_root(uri))
        mlflow.set_experiment(experiment)
    elif mlflow.get_tracking_uri() != uri:
        raise SearchError(f"--mlflow {uri} differs from the enclosing run's {mlflow.get_tracking_uri()}", param="mlflow")
    run = mlflow.start_run(run_name=name, nested=nested, tags={"sweetspot.kind": kind})
    try:
        yield Tracker(mlflow, run)
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")


def _choice(value: Any) -> str:
    """``[44]`` as ``44``, ``[40, 42, 44]`` as ``40-44`` (an averaged window)."""
    try:
        epochs = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return str(value)
    if isinstance(epochs, list) and epochs:
        return str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
    return str(epochs)


def log_search(tracker: Tracker | None, result: Any, output: Path, run_label: str) -> None:
    """The search's settings and pick on its run, a child per trial (its selection as params,
    every validation metric), the outputs as artifacts."""
    if tracker is None:
        return
    tracker.params({"run": run_label, "objective": result.objective, "mode": result.mode,
                    **{f"settings.{k}": v for k, v in result.settings.items()}})
    pick = result.pick
    tracker.params({f"pick.{g}": _choice(list(e)) for g, e in pick.epochs.items()})
    tracker.metrics({
        "trials": len(result.trials), "seconds": result.seconds, "pick.search": pick.search_score,
        "pick.confirm": pick.confirm_score, "pick.test": pick.test_score,
        **{f"baseline.{n.replace(' ', '_')}.search": c.search_score for n, c in result.baselines.items()},
    })
    statuses = {"finished": "FINISHED", "stopped early": "KILLED", "failed": "FAILED"}
    for number, row in enumerate(result.trials.to_dict("records")):
        params = {k.removeprefix("choice/"): _choice(v) for k, v in row.items() if k.startswith("choice/")}
        params.update({"origin": row.get("origin"), "status": row.get("status"), "trial_id": row.get("trial_id")})
        metrics = {k: v for k, v in row.items() if k.startswith("val/")}
        metrics.update({"objective": row.get("objective"), "partial_objective": row.get("partial_objective"),
                        "shards_seen": row.get("shards_seen"), "seconds": row.get("seconds")})
        tracker.child(f"trial {number:04d}", params, metrics, statuses.get(str(row.get("status")), "FINISHED"))
    tracker.artifacts(output)


def log_auto(tracker: Tracker | None, result: Any) -> None:
    """auto: a child per run (its selection as params, its validation and test scores), the outputs."""
    if tracker is None:
        return
    tracker.metrics({"runs": len(result.runs), "failed": len(result.failed), "seconds": result.seconds})
    for item in result.runs:
        record = item.record or {}
        params = {f"selection.{g}": _selection_text(c) for g, c in (record.get("selection") or {}).items()}
        params.update({"run": item.run, "status": item.status, "error": item.error})
        metrics = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        tracker.child(item.name, params, metrics, "FINISHED" if item.ok else "FAILED")
    tracker.artifacts(result.output)


def _selection_text(choice: Any) -> str:
    if isinstance(choice, Mapping) and "average" in choice:
        first, last = choice["average"]
        return f"{first}-{last}"
    return _text(choice)


__all__ = ["Tracker", "log_auto", "log_search", "mlflow_run", "tracking_uri"]
