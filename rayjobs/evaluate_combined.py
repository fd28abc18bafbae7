"""``sweetspot evaluate``: the combination against single epochs, averages and soups, on val and test.

    sweetspot evaluate --checkpoint-dir RUN (--model combined.safetensors | --selection selection.json)
        [--spec sweetspot.yaml] [--baselines 30,40,50] [--analysis DIR] --output eval/
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sweetspot
from rayjobs._entry import exit_process, run_entry
from rayjobs.options import add_progress_flag, add_trust_flag, parse_group_option

DESCRIPTION = "Evaluate a combined model against single-epoch, averaged and soup baselines"
EPILOG = """examples:
  sweetspot evaluate --checkpoint-dir runs/demo --model combined.safetensors --analysis analysis/ --output eval/
  python -m rayjobs.evaluate_combined --model combined_model.pt --checkpoint-dir runs/demo --output eval/

Compares the combination with single epochs (--baselines, nearest recorded), the best single epoch on
validation, the last epoch, the plateau average, a uniform soup, LAWA (last 5) and a greedy soup.
Everything is chosen on the validation split and reported on the held-out test split."""


USAGE = """%(prog)s --checkpoint-dir RUN (--model FILE | --selection FILE | --group G=E ...) --output DIR
       [--spec YAML | --trust-run-spec] [options]"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = USAGE
    parser.add_argument("--checkpoint-dir", metavar="RUN", help="run directory the baselines are built from, or a folder of checkpoint files (with --spec); required")
    parser.add_argument("--model", type=Path, metavar="FILE", help="combined model file (.safetensors or .pt)")
    parser.add_argument("--selection", type=Path, metavar="FILE", help="selection.json to build the combination from")
    parser.add_argument("--group", action="append", default=[], metavar="G=E", help="GROUP=EPOCH or GROUP=FIRST-LAST; repeatable; overrides --selection")
    parser.add_argument("--spec", type=Path, metavar="YAML", help="your sweetspot.yaml: evaluating runs its model, data and evaluate code (default: refuse unless --trust-run-spec)")
    parser.add_argument("--baselines", metavar="E,E,...", default="30,40,50", help="single epochs to compare, the nearest recorded (default 30,40,50)")
    parser.add_argument("--analysis", type=Path, metavar="DIR", help="analysis folder (module_metrics.json) for plateau windows and picks (default: analyse the run now)")
    parser.add_argument("--update-bn", action="store_true", help="recompute BatchNorm statistics for a crossover too (default: only for averages)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="folder for evaluation.json, the report and the PNG")
    parser.add_argument("--device", default="auto", help="torch device: auto (a GPU when available, else CPU), cpu, cuda or cuda:N (default auto)")
    add_trust_flag(parser, "evaluation")
    add_progress_flag(parser)


def parse_epochs(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise sweetspot.EvaluationError(f"--baselines {text!r} must be comma-separated epochs, e.g. 30,40,50") from None


def combination_option(args: argparse.Namespace) -> Any:
    """--model FILE, or the --selection file overridden by --group choices."""
    if args.checkpoint_dir is None:
        raise sweetspot.EvaluationError(
            "pass --checkpoint-dir RUN: the baselines are built from the run's checkpoints (a run"
            " directory, or a folder of checkpoint_epoch_<N>.pt files with --spec)"
        )
    if (args.model is None) == (args.selection is None and not args.group):
        raise sweetspot.EvaluationError("pass exactly one of --model FILE or --selection FILE (or --group G=E options)")
    if args.model is not None:
        return args.model
    groups = dict(parse_group_option(text) for text in args.group)
    if any(isinstance(v, Path) for v in groups.values()):
        raise sweetspot.EvaluationError(
            "evaluate takes --group GROUP=EPOCH or GROUP=FIRST-LAST; to evaluate checkpoint files per"
            " group, combine them first (sweetspot combine) and pass --model"
        )
    if not groups:
        return args.selection
    chosen = sweetspot.load_selection(args.selection).choices() if args.selection else {}
    return {g: c.model_dump() if hasattr(c, "model_dump") else c for g, c in {**chosen, **groups}.items()}


def run(args: argparse.Namespace) -> int:
    evaluation = sweetspot.evaluate(
        args.checkpoint_dir, combination_option(args), spec=args.spec, analysis=args.analysis,
        baselines=parse_epochs(args.baselines), update_bn=args.update_bn, resamples=args.resamples,
        seed=args.seed, device=args.device, progress=not args.no_progress, output=args.output,
        trust_run_spec=args.trust_run_spec,
    )
    print(evaluation.headline())
    for path in evaluation.written.values():
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry("python -m rayjobs.evaluate_combined", DESCRIPTION, add_arguments, run, argv, EPILOG)


if __name__ == "__main__":
    exit_process(main())
