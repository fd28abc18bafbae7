"""Options shared by the entrypoints: ``--group G=E``, the seed's ``--<group> FILE``, the search settings."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import sweetspot

_EPOCH_RE = re.compile(r"^\d+$")
_WINDOW_RE = re.compile(r"^(\d+)-(\d+)$")


def parse_group_option(text: str) -> tuple[str, int | dict[str, list[int]] | Path]:
    """``G=44`` (an epoch), ``G=40-48`` (an average window) or ``G=FILE`` (a checkpoint file)."""
    group, sep, value = text.partition("=")
    if not sep or not group or not value:
        raise sweetspot.CombineError(f"--group {text!r} must look like GROUP=EPOCH, GROUP=FIRST-LAST or GROUP=FILE")
    if _EPOCH_RE.match(value):
        return group, int(value)
    if match := _WINDOW_RE.match(value):
        first, last = int(match.group(1)), int(match.group(2))
        if first > last:
            raise sweetspot.CombineError(f"--group {text!r}: window {first}-{last} must have first <= last")
        return group, {"average": [first, last]}
    return group, Path(value)


def spec_in_argv(argv: Sequence[str]) -> str | None:
    """The value of ``--spec`` in ``argv`` (``--spec X`` or ``--spec=X``), if any."""
    for index, item in enumerate(argv):
        if item.startswith("--spec="):
            return item.partition("=")[2]
        if item == "--spec" and index + 1 < len(argv):
            return argv[index + 1]
    return None


def group_file_options(argv: Sequence[str], own: Sequence[str]) -> list[str]:
    """The seed's ``--<group> FILE`` as ``--group <group>=FILE``, for the groups of the ``--spec`` in ``argv``.

    ``own`` are the command's own options (abbreviations included); anything else that looks like an
    option is refused here with what to do, before argparse would call it unrecognized.
    """
    spec_path = spec_in_argv(argv)
    names = list(dict.fromkeys(item.partition("=")[0] for item in _options(argv)))
    if all(name in own for name in names):
        return list(argv)
    spec = sweetspot.load_spec(spec_path) if spec_path is not None else None
    groups = spec.groups if spec is not None else {}
    unknown = [n for n in names if n not in own and (n[2:] in groups or not any(o.startswith(n) for o in own))]
    if not unknown:
        return list(argv)
    if spec is None:
        raise sweetspot.CombineError(
            f"{', '.join(unknown)}: no such option without a spec. The --<group> FILE options come from the"
            " groups of the spec, so pass --spec sweetspot.yaml first, e.g. python -m rayjobs.combine_modules"
            f" --spec sweetspot.yaml {unknown[0]} FILE [--<group> FILE ...] [--default FILE] --output combined_model.pt"
        )
    strays = [name for name in unknown if name[2:] not in groups]
    if strays:
        raise sweetspot.CombineError(
            f"{', '.join(strays)}: neither an option of combine nor a group of spec {spec.name!r} ({spec_path});"
            f" its groups give {' '.join(f'--{g}' for g in groups)} (each FILE); see --help for the other options"
        )
    out: list[str] = []
    items = iter(argv)
    for item in items:
        name, sep, value = item.partition("=")
        if name in unknown:
            value = value if sep else next(items, "")
            out += ["--group", f"{name[2:]}={value}"]
        else:
            out.append(item)
    return out


def _options(argv: Sequence[str]) -> list[str]:
    found = []
    for item in argv:
        if item == "--":
            break
        if item.startswith("--") and len(item) > 2:
            found.append(item)
    return found


def add_progress_flag(parser: argparse.ArgumentParser, *old_names: str) -> None:
    """``--no-progress`` (the one name every command uses); ``old_names`` still work, unlisted."""
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars (default: shown, on stderr)")
    for name in old_names:
        parser.add_argument(name, dest="no_progress", action="store_true", help=argparse.SUPPRESS)


def add_trust_resume_flag(parser: argparse.ArgumentParser) -> None:
    """``--trust-resume``: resume a search folder this user's records do not show them writing."""
    parser.add_argument(
        "--trust-resume", action="store_true",
        help="resume an interrupted search in --output even if your own searches did not write it (resuming"
        " unpickles the folder's Tune and searcher state, which can run code: only for folders you know,"
        " e.g. a job's volume on a cluster with a fresh home folder; default: refuse)",
    )


def add_trust_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """``--trust-run-spec``: use the code the run's stored spec names (a run may come from elsewhere)."""
    parser.add_argument(
        "--trust-run-spec", action="store_true",
        help=f"without --spec, run the code named by the spec stored in the run for {what} (only for runs you trust;"
        " default: refuse and ask for --spec)",
    )


class SearchArgumentError(sweetspot.SweetspotError, ValueError):
    """A search option with a value the search cannot take."""


def add_search_settings(parser: argparse.ArgumentParser) -> None:
    """The options that make a ``SearchConfig`` (``config_from``), shared with ``rayjobs.pipeline``."""
    parser.add_argument("--num-samples", type=int, default=200, help="trials of the algorithm (default 200); the baselines, about 2 per checkpoint, come on top")
    parser.add_argument("--algo", default="tpe", help="tpe (default), cmaes, gp, random, grid, module-soup or sweeps; or a chain such as sweeps+tpe (each after the one before, learning all scored before it)")
    parser.add_argument(
        "--algo-param", action="append", default=[], metavar="NAME=VALUE",
        help="a setting of --algo, e.g. startup_trials=20 (tpe), sweeps=5 (module-soup), passes=2 (sweeps); in a chain it goes to every member that has it; repeatable",
    )
    parser.add_argument("--candidates", default="all", choices=["all", "analysis"], help="epochs per group: all recorded, or the analysis's plateau window and neighbours (default all)")
    parser.add_argument("--include-averages", action="store_true", help="also search averaging windows around each epoch")
    parser.add_argument("--max-half-width", type=int, default=2, help="widest averaging window, in checkpoints each side (default 2)")
    parser.add_argument("--confirm-fraction", type=float, default=0.3, help="part of validation held back to pick among the top candidates (default 0.3)")
    bn = parser.add_mutually_exclusive_group()
    bn.add_argument("--update-bn", dest="update_bn", action="store_true", default=None, help="recompute stale BatchNorm statistics before scoring (default: when the model has BatchNorm and the spec has batches)")
    bn.add_argument("--no-update-bn", dest="update_bn", action="store_false", help="score without recomputing BatchNorm statistics")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial, fractional allowed (default 0: CPU)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default 1)")
    parser.add_argument("--max-concurrent", type=int, help="most trials at once (default: as resources allow)")
    parser.add_argument("--shards", type=int, default=4, help="validation shards; ASHA stops poor trials after each (default 4; 1 = no early stopping)")
    parser.add_argument("--pool-memory", default="8GB", help="object-store memory per node for checkpoints (default 8GB)")
    parser.add_argument("--prefix-module", action="append", default=[], metavar="MODULE", help="a submodule whose output is cached per choice (e.g. backbone); repeatable")
    parser.add_argument("--prefix-cache-memory", default="1GB", help="memory per worker for cached prefix outputs (default 1GB)")
    parser.add_argument("--max-failures", type=int, default=2, help="reruns of a trial whose worker or node died (default 2)")
    parser.add_argument("--top-k", type=int, default=5, help="top candidates rescored on the confirm part and on test (default 5)")
    parser.add_argument("--no-baselines", action="store_true", help="do not search single epochs and the greedy soup first")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samplers and of the confirm split (default 0)")


_FLAGS = {
    "num_samples": "--num-samples", "confirm_fraction": "--confirm-fraction", "gpus_per_trial": "--gpus-per-trial",
    "cpus_per_trial": "--cpus-per-trial", "max_concurrent": "--max-concurrent", "shards": "--shards",
    "pool_memory": "--pool-memory", "prefix_cache_memory": "--prefix-cache-memory", "top_k": "--top-k", "max_half_width": "--max-half-width", "algo": "--algo",
}


def algo_params(pairs: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` settings: a value that reads as JSON (numbers, true/false) is that, else text."""
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise SearchArgumentError(f"--algo-param {pair!r} is not NAME=VALUE; write e.g. --algo-param startup_trials=20")
        try:
            params[name.strip()] = json.loads(value)
        except ValueError:
            params[name.strip()] = value
    return params


def config_from(args: argparse.Namespace) -> Any:
    """The search settings; Ray and Optuna are imported only now, so other commands start fast."""
    try:
        return sweetspot.SearchConfig(
            num_samples=args.num_samples, algo=args.algo, algo_params=algo_params(args.algo_param), candidates=args.candidates,
            include_averages=args.include_averages, max_half_width=args.max_half_width,
            confirm_fraction=args.confirm_fraction, update_bn=args.update_bn,
            gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial,
            max_concurrent=args.max_concurrent, shards=args.shards, pool_memory=args.pool_memory,
            prefix_modules=tuple(args.prefix_module), prefix_cache_memory=args.prefix_cache_memory,
            top_k=args.top_k, baselines=not args.no_baselines, max_failures=args.max_failures, seed=args.seed,
        )
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else ""
            if field in ("algo", "algo_params"):  # the message names the algorithm (and its settings)
                problems.append(str(item["msg"]).removeprefix("Value error, "))
                continue
            problems.append(f"{_FLAGS.get(field, '--' + field.replace('_', '-'))} {item.get('input')!r}: {item['msg']}")
        raise SearchArgumentError("; ".join(problems)) from None
