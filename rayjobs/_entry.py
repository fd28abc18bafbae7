"""Shared plumbing for entrypoints: argument parsing and turning user errors into messages."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from modules.errors import SweetspotError


def run_entry(
    prog: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None = None,
    epilog: str | None = None,
) -> int:
    """Parse ``argv`` and call ``run``; a SweetspotError becomes ``error: ...`` and exit code 2."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return call_reporting_errors(run, args)


def call_reporting_errors(run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    try:
        return int(run(args) or 0)
    except SweetspotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
