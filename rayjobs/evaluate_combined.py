"""``sweetspot evaluate``: the combination against single epochs, averages and soups, on val and test.

    sweetspot evaluate --checkpoint-dir RUN (--model combined.safetensors | --selection selection.json)
        [--spec sweetspot.yaml] [--baselines 30,40,50] [--analysis DIR] --output eval/
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from analysis.errors import AnalysisWarning
from analysis.evaluation.baselines import (
    DEFAULT_SINGLE_EPOCHS,
    Candidate,
    analysis_for,
    is_average,
    read_analysis_dir,
)
from analysis.evaluation.evaluate import CandidateEvaluator, run_evaluation
from analysis.evaluation.report import headline, write_report
from modules.atomic import check_output_folder
from modules.combine import (
    check_file_fits,
    check_run_fits,
    describe_spec_model,
    read_provenance,
    selection_epochs,
    spec_model_layout,
)
from modules.devices import DEVICE_HELP, resolve_device
from modules.errors import CombineError, EvaluationError
from modules.importer import open_run
from modules.rundir import MANIFEST_NAME, RunDir
from modules.spec import Spec, load_spec
from rayjobs._entry import run_entry
from rayjobs.combine_modules import load_run_spec, parse_group_option, resolve_selection

DESCRIPTION = "Evaluate a combined model against single-epoch, averaged and soup baselines"
EPILOG = """examples:
  sweetspot evaluate --checkpoint-dir runs/demo --model combined.safetensors --analysis analysis/ --output eval/
  python -m rayjobs.evaluate_combined --model combined_model.pt --checkpoint-dir runs/demo --output eval/

Compares the combination with single epochs (--baselines, nearest recorded), the best single epoch on
validation, the last epoch, the plateau average, a uniform soup, LAWA (last 5) and a greedy soup.
Everything is chosen on the validation split and reported on the held-out test split."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint-dir", type=Path, metavar="RUN", help="run directory the baselines are built from")
    parser.add_argument("--model", type=Path, metavar="FILE", help="combined model file (.safetensors or .pt)")
    parser.add_argument("--selection", type=Path, metavar="FILE", help="selection.json to build the combination from")
    parser.add_argument("--group", action="append", default=[], metavar="G=E", help="GROUP=EPOCH or GROUP=FIRST-LAST")
    parser.add_argument("--spec", type=Path, metavar="YAML", help="sweetspot.yaml (default: the one stored in the run)")
    parser.add_argument("--baselines", metavar="E,E,...", default=",".join(map(str, DEFAULT_SINGLE_EPOCHS)), help="single epochs to compare (nearest recorded)")
    parser.add_argument("--analysis", type=Path, metavar="DIR", help="analysis folder (module_metrics.json) for plateau windows and picks")
    parser.add_argument("--update-bn", action="store_true", help="recompute BatchNorm statistics for a crossover too")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="folder for evaluation.json, the report and the PNG")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def parse_epochs(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EvaluationError(f"--baselines {text!r} must be comma-separated epochs, e.g. 30,40,50") from None


def _check_model_file(path: Path) -> None:
    if path.is_dir():
        raise EvaluationError(f"--model {path} is a folder; pass the model file `sweetspot combine` wrote (e.g. {path / 'combined.safetensors'})")
    if not path.exists():
        raise EvaluationError(
            f"--model {path} does not exist; pass the file `sweetspot combine --output` wrote (e.g."
            " combined.safetensors), or evaluate a selection with --selection selection.json instead"
        )


#: What to do when the --model file does not fit the spec's model.
MODEL_FIX = (
    "Pass the --spec the run was recorded with (its model and model_args must build the model the file"
    " was combined for), or a --model combined from this run"
)


#: What to do when the run's checkpoints do not fit the spec's model.
RUN_FIX = "Pass the --spec the run was recorded with (its model and model_args must build the model the run trained)"


def run(args: argparse.Namespace) -> int:
    output = check_output_folder(args.output)
    if args.checkpoint_dir is None:
        raise EvaluationError(
            "pass --checkpoint-dir RUN: the baselines are built from the run's checkpoints (a run"
            " directory, or a folder of checkpoint_epoch_<N>.pt files with --spec)"
        )
    source = Path(args.checkpoint_dir)
    resolved = output.resolve()
    if resolved == source.resolve() or source.resolve() in resolved.parents:
        raise CombineError(f"--output {args.output} is inside the run directory {source}; write elsewhere")
    if (args.model is None) == (args.selection is None and not args.group):
        raise EvaluationError("pass exactly one of --model FILE or --selection FILE (or --group G=E options)")
    # Cheap checks first: nothing below this block takes long until the run is imported.
    if args.model is not None:
        _check_model_file(args.model)
    single_epochs = parse_epochs(args.baselines)
    if args.analysis is not None:
        read_analysis_dir(args.analysis)
    spec, spec_path = (load_spec(args.spec), args.spec) if args.spec else (None, None)
    stored_run = None
    if spec is None and (source / MANIFEST_NAME).is_file():
        stored_run = RunDir(source)
        spec, spec_path = load_run_spec(None, stored_run), stored_run.spec_path()
    model_desc = describe_spec_model(spec, spec_path) if spec is not None else None
    layout = spec_model_layout(spec) if spec is not None else None
    if args.model is not None and layout is not None:
        check_file_fits(args.model, layout, model_desc or "the spec's model", MODEL_FIX)
    with tempfile.TemporaryDirectory(prefix="sweetspot-import-") as scratch:
        run_dir = stored_run or open_run(source, spec if args.spec else None, scratch, progress=not args.no_progress)
        spec = spec or load_run_spec(None, run_dir)
        return _evaluate(args, run_dir, spec, source, single_epochs, model_desc, layout)


def _evaluate(
    args: argparse.Namespace,
    run_dir: RunDir,
    spec: Spec,
    source: Path,
    single_epochs: list[int],
    model_desc: str | None,
    layout: dict[str, tuple[int, ...]] | None = None,
) -> int:
    layout = layout if layout is not None else spec_model_layout(spec)
    check_run_fits(run_dir, layout, model_desc or describe_spec_model(spec, run_dir.spec_path()), RUN_FIX)
    combination_epochs = None
    if args.model is None:
        groups = dict(parse_group_option(text) for text in args.group)
        if any(isinstance(v, Path) for v in groups.values()):
            raise EvaluationError(
                "evaluate takes --group GROUP=EPOCH or GROUP=FIRST-LAST; to evaluate checkpoint files per"
                " group, combine them first (sweetspot combine) and pass --model"
            )
        selection = resolve_selection(run_dir, args.selection, groups, args.analysis)
        combination_epochs = selection_epochs(selection, run_dir)
    evaluator = CandidateEvaluator(spec, run_dir, device=resolve_device(args.device), model_desc=model_desc)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AnalysisWarning)
        analysis, analysis_note = analysis_for(run_dir, args.analysis, spec)
    analysis_warnings = [str(w.message) for w in caught if issubclass(w.category, AnalysisWarning)]
    for message in analysis_warnings:
        print(f"warning: {message}", file=sys.stderr)
    for other in (w for w in caught if not issubclass(w.category, AnalysisWarning)):
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    extra: dict[str, object] = {"run_dir": str(source), "spec": spec.name, "analysis": analysis_note}
    if args.model is not None:
        provenance = read_provenance(args.model)
        combination = Candidate(
            "combination", "combination", model_path=args.model,
            recompute_bn=args.update_bn and evaluator.has_bn, provenance=provenance,
        )
        extra["combination_provenance"] = provenance
    else:
        assert combination_epochs is not None
        recompute = evaluator.has_bn and (args.update_bn or is_average(combination_epochs))
        combination = Candidate("combination", "combination", combination_epochs, recompute_bn=recompute)
        extra["combination_selection"] = selection.to_json()
    result = run_evaluation(
        evaluator, combination, single_epochs, analysis, args.resamples, args.seed, progress=not args.no_progress
    )
    if analysis is None:
        result.notes.append(analysis_note)
    result.notes.extend(f"analysis: {message}" for message in analysis_warnings)
    paths = write_report(result, args.output, extra)
    print(headline(result, markdown=False))
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry("python -m rayjobs.evaluate_combined", DESCRIPTION, add_arguments, run, argv, EPILOG)


if __name__ == "__main__":
    sys.exit(main())
