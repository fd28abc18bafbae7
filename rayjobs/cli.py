"""The ``sweetspot`` command: one subcommand per pipeline step, each a module in ``rayjobs``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rayjobs._entry import call_reporting_errors, exit_process
from sweetspot import SweetspotError, __version__

#: subcommand -> module in ``rayjobs`` defining ``DESCRIPTION``, ``add_arguments`` and ``run``.
SUBCOMMANDS = {
    "train-demo": "rayjobs.train_demo",
    "import": "rayjobs.import_run",
    "analyze": "rayjobs.analyze_sweetspots",
    "combine": "rayjobs.combine_modules",
    "evaluate": "rayjobs.evaluate_combined",
    "search": "rayjobs.search_crossover",
    "calibrate": "rayjobs.calibrate_thresholds",
    "auto": "rayjobs.auto_sweetspot",
    "verify": "rayjobs.verify_run",
    "pipeline": "rayjobs.pipeline",
}

DESCRIPTION = "Find each module group's best training epoch and build one model from them."
EPILOG = """pipeline:
  sweetspot train-demo --out runs/demo                       # or: sweetspot import --from DIR ...
  sweetspot analyze --checkpoint-dir runs/demo --output analysis/
  sweetspot combine --checkpoint-dir runs/demo --selection analysis/selection.json --output combined.safetensors
  sweetspot evaluate --checkpoint-dir runs/demo --model combined.safetensors --analysis analysis/ --output eval/
  sweetspot verify runs/demo [--clean]                       # sha256 of every file, leftovers of a kill
  sweetspot pipeline --checkpoint-dir runs/a --auto-runs runs/b --spec S --output results/   # all of it, summary.md

`sweetspot COMMAND --help` describes each command."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sweetspot", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"sweetspot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # a step not built yet
        command = sub.add_parser(
            name,
            help=module.DESCRIPTION,
            description=module.DESCRIPTION,
            epilog=getattr(module, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        modules[name] = module
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    argv = list(sys.argv[1:] if argv is None else argv)
    translate = getattr(modules.get(argv[0]) if argv else None, "translate_argv", None)
    if translate is not None:
        try:
            argv = [argv[0], *translate(argv[1:])]
        except SweetspotError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    return call_reporting_errors(args._run, args)


def run_command() -> None:
    """The ``sweetspot`` script: ``main`` in a process of its own, ended by ``exit_process``."""
    exit_process(main())


if __name__ == "__main__":
    run_command()
