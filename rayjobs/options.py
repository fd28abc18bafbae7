"""Option values shared by the entrypoints: ``--group G=E`` and the seed's ``--<group> FILE``."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

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


def add_trust_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """``--trust-run-spec``: use the code the run's stored spec names (a run may come from elsewhere)."""
    parser.add_argument(
        "--trust-run-spec", action="store_true",
        help=f"without --spec, run the code named by the spec stored in the run for {what} (only for runs you trust;"
        " default: refuse and ask for --spec)",
    )
