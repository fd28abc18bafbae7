"""``sweetspot verify``: check a run directory's files against its manifest, and its leftovers."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import sweetspot
from rayjobs._entry import exit_process, run_entry

DESCRIPTION = (
    "Check every file of a run directory against the sha256 in its manifest and list leftovers of"
    " interrupted writes (removed with --clean); exit status 1 while a problem remains."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sweetspot verify``."""
    parser.add_argument("run", metavar="RUN", help="run directory to check")
    parser.add_argument(
        "--clean", action="store_true",
        help="remove leftovers of interrupted writes (default: only list them); listed files are never touched",
    )


def run(args: argparse.Namespace) -> int:
    """Print what the check found; 1 when a file fails its sha256 or a leftover remains."""
    check = sweetspot.RunDir(args.run).check(clean=args.clean)
    print(check.summary())
    remaining = [p for p in check.leftovers if p not in check.removed]
    return 0 if check.ok and not remaining else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry("sweetspot verify", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    exit_process(main())
