"""Shared plumbing for entrypoints: argument parsing, and turning user errors and warnings into messages."""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

from sweetspot import SweetspotError, SweetspotWarning

#: API argument -> the option that gives it, where the names differ (others: ``--`` + the argument).
COMMON_FLAGS = {"run": "--checkpoint-dir", "fmt": "--format", "source": "--from"}


def run_entry(
    prog: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None = None,
    epilog: str | None = None,
    translate: Callable[[list[str]], list[str]] | None = None,
) -> int:
    """Parse ``argv`` (after ``translate``) and call ``run``; a SweetspotError becomes ``error: ...``, exit 2."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = translate(argv) if translate is not None else argv
    except SweetspotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    return call_reporting_errors(run, args)


def exit_process(code: int) -> NoReturn:
    """End a command's own process (``python -m rayjobs...``, the ``sweetspot`` script) with ``code``.

    The outputs are on disk by now; what is left is the exit, which took 3 to 3.5 s of a search's
    process (measured). Ray is shut down here rather than by its exit hook, which first sleeps half
    a second for worker logs that these commands do not stream (``log_to_driver=False``). The
    interpreter's last garbage collections walk every object torch, Ray Tune and pandas made, about a
    second of CPU; frozen (``gc.freeze``), they are left to the process's end. Everything else a
    normal exit does still runs: threads joined, exit handlers, streams flushed."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    gc.freeze()
    sys.exit(code)


def flag_for(param: str) -> str:
    """The command-line option that gives the API argument ``param``."""
    return COMMON_FLAGS.get(param, "--" + param.replace("_", "-"))


def call_reporting_errors(run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Call ``run``; warnings of the library print as ``warning: ...``, its errors as ``error: ...``
    (naming the option whose value is wrong) with exit code 2."""
    try:
        with printed_warnings():
            return int(run(args) or 0)
    except SweetspotError as error:
        message = error.named(flag_for(error.param)) if error.param else str(error)
        if getattr(error, "user_traceback", None):  # the user's own code failed: where, for them to fix
            print(error.user_traceback.rstrip(), file=sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # outputs are written under a temporary name and renamed when complete: none is half-written
        print("interrupted (Ctrl-C); no output was left half-written", file=sys.stderr)
        return 130


@contextlib.contextmanager
def printed_warnings() -> Iterator[None]:
    """Print the library's warnings as ``warning: MESSAGE`` lines on stderr, as they happen, every time."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        if issubclass(category, SweetspotWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", SweetspotWarning)
        warnings.showwarning = show
        yield
