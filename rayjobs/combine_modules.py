"""``sweetspot combine``: build one model from a chosen epoch (or epoch average) per module group.

Two forms:

    sweetspot combine --checkpoint-dir RUN (--selection selection.json | --group backbone=44
        --group heads=40 --group analyzers=40-48) --output combined.safetensors [--update-bn]
    python -m rayjobs.combine_modules --spec sweetspot.yaml --backbone checkpoint_epoch_44.pt
        --heads checkpoint_epoch_40.pt [--default checkpoint_epoch_60.pt] --output combined_model.pt

Groups not named take the analysis's pick (``--analysis DIR``); without one, the error lists them.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modules.atomic import check_output_file
from modules.combine import (
    combine,
    describe_spec_model,
    plan_from_files,
    plan_from_run,
    selection_epochs,
)
from modules.errors import CombineError, SpecError
from modules.importer import epoch_of_file
from modules.rundir import RunDir
from modules.selection import (
    AverageWindow,
    Selection,
    coupling_violations,
    load_selection,
    parse_selection,
)
from modules.spec import Spec, load_spec
from rayjobs._entry import run_entry

DESCRIPTION = "Combine module groups from different epochs (or epoch averages) into one model"
GROUP_FILE_PREFIX = "group_file__"
#: Options not known when the parser was built (e.g. ``--backbone`` without ``--spec``): reported by run().
UNKNOWN_PREFIX = "unknown_option__"
EPILOG = """examples:
  sweetspot combine --checkpoint-dir runs/demo --selection analysis/selection.json --output combined.safetensors
  sweetspot combine --checkpoint-dir runs/demo --group backbone=44 --group heads=40-48 \\
      --analysis analysis/ --output combined.safetensors --update-bn
  python -m rayjobs.combine_modules --spec sweetspot.yaml --backbone checkpoint_epoch_44.pt \\
      --heads checkpoint_epoch_40.pt --default checkpoint_epoch_60.pt --output combined_model.pt

GROUP=FIRST-LAST averages the group over the recorded epochs in the window. Groups not named take
the analysis's pick (--analysis DIR); without one, the error lists them. With --spec, every group
of the spec also gets a --<group> FILE option (the seed's form over checkpoint_epoch_<N>.pt files).
--update-bn recomputes BatchNorm statistics only where they no longer fit: in averaged groups and
in groups fed by a group taken from another epoch."""
_EPOCH_RE = re.compile(r"^\d+$")
_WINDOW_RE = re.compile(r"^(\d+)-(\d+)$")


def parse_group_option(text: str) -> tuple[str, int | AverageWindow | Path]:
    """``G=44`` (an epoch), ``G=40-48`` (an average window) or ``G=FILE`` (a checkpoint file)."""
    group, sep, value = text.partition("=")
    if not sep or not group or not value:
        raise CombineError(f"--group {text!r} must look like GROUP=EPOCH, GROUP=FIRST-LAST or GROUP=FILE")
    if _EPOCH_RE.match(value):
        return group, int(value)
    if match := _WINDOW_RE.match(value):
        first, last = int(match.group(1)), int(match.group(2))
        if first > last:
            raise CombineError(f"--group {text!r}: window {first}-{last} must have first <= last")
        return group, AverageWindow(average=(first, last))
    return group, Path(value)


def _spec_in_argv(argv: Sequence[str]) -> Spec | None:
    for index, item in enumerate(argv):
        path = item.partition("=")[2] if item.startswith("--spec=") else None
        if item == "--spec" and index + 1 < len(argv):
            path = argv[index + 1]
        if path:
            try:
                return load_spec(path)
            except SpecError:
                return None  # reported properly when run() loads it
    return None


def _unknown_options(argv: Sequence[str], taken: set[str]) -> list[str]:
    """``--name`` options in ``argv`` that are neither in ``taken`` nor an abbreviation of one."""
    found: list[str] = []
    for item in argv:
        if item == "--":
            break
        name = item.partition("=")[0]
        if not name.startswith("--") or len(name) <= 2 or name in taken or name in found:
            continue
        if not any(option.startswith(name) for option in taken):
            found.append(name)
    return found


def add_group_file_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``--<group> FILE`` for each group of the spec named by ``--spec`` in ``argv``.

    Other unknown ``--name`` options are accepted here and reported by ``run`` with advice (a
    ``--backbone FILE`` without ``--spec`` would otherwise be argparse's bare "unrecognized arguments").
    """
    spec = _spec_in_argv(argv)
    taken = {option for action in parser._actions for option in action.option_strings}
    for group in spec.groups if spec is not None else ():
        if f"--{group}" not in taken:
            parser.add_argument(
                f"--{group}", dest=GROUP_FILE_PREFIX + group, metavar="FILE", help=f"checkpoint for group {group!r}"
            )
            taken.add(f"--{group}")
    for name in _unknown_options(argv, taken):
        parser.add_argument(name, dest=UNKNOWN_PREFIX + name[2:], nargs="?", const="", help=argparse.SUPPRESS)


def check_unknown_options(args: argparse.Namespace) -> None:
    """Report options that are neither combine's own nor groups of the spec, with what to do."""
    unknown = [f"--{k[len(UNKNOWN_PREFIX):]}" for k, v in vars(args).items() if k.startswith(UNKNOWN_PREFIX) and v is not None]
    if not unknown:
        return
    listed = ", ".join(unknown)
    if args.spec is None:
        raise CombineError(
            f"{listed}: no such option without a spec. The --<group> FILE options come from the groups of"
            f" the spec, so pass --spec sweetspot.yaml first, e.g. python -m rayjobs.combine_modules --spec"
            f" sweetspot.yaml {unknown[0]} FILE [--<group> FILE ...] [--default FILE] --output combined_model.pt"
        )
    spec = load_spec(args.spec)
    groups = " ".join(f"--{g}" for g in spec.groups)
    raise CombineError(
        f"{listed}: neither an option of combine nor a group of spec {spec.name!r} ({args.spec}); its groups"
        f" give {groups} (each FILE); see --help for the other options"
    )


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> None:
    parser.add_argument("--checkpoint-dir", type=Path, metavar="RUN", help="run directory to read group checkpoints from")
    parser.add_argument("--selection", type=Path, metavar="FILE", help="selection.json: group -> epoch or {\"average\": [first, last]}")
    parser.add_argument(
        "--group", action="append", default=[], metavar="G=E",
        help="GROUP=EPOCH, GROUP=FIRST-LAST (average) or GROUP=FILE (seed checkpoint); repeatable",
    )
    parser.add_argument("--output", type=Path, required=True, metavar="FILE", help="combined model file (.safetensors or .pt)")
    parser.add_argument("--format", choices=["safetensors", "pt"], help="output format (default: from the suffix)")
    parser.add_argument("--update-bn", action="store_true", help="recompute BatchNorm statistics on the train split")
    parser.add_argument("--spec", type=Path, metavar="YAML", help="sweetspot.yaml (default: the one stored in the run)")
    parser.add_argument("--analysis", type=Path, metavar="DIR", help="analysis folder: its picks fill groups not named")
    parser.add_argument("--default", type=Path, metavar="FILE", help="seed form: checkpoint for every group not named")
    add_group_file_options(parser, sys.argv[1:] if argv is None else argv)


def analysis_picks(folder: Path | None) -> Selection | None:
    """The analysis's per-group picks from ``folder`` (module_metrics.json or selection.json)."""
    if folder is None:
        return None
    from analysis.evaluation.baselines import read_analysis_dir

    return read_analysis_dir(folder).picks


def analysis_files(
    spec: Spec, files: dict[str, Path], default: Path | None, analysis: Path | None
) -> dict[str, Path | list[Path]]:
    """Seed form: groups without a file take ``checkpoint_epoch_<pick>`` beside the named files
    (every checkpoint inside the window for an average pick)."""
    picks = analysis_picks(analysis)
    if picks is None:
        return dict(files)
    named = next(iter(files.values()), default)
    if named is None:
        raise CombineError("with --analysis in the checkpoint-file form, name at least one --<group> FILE")
    folder = named.parent
    found = {e: p for p in folder.iterdir() if (e := epoch_of_file(p)) is not None}
    out: dict[str, Path | list[Path]] = dict(files)
    for group in spec.groups:
        choice = picks.root.get(group)
        if group in out or choice is None:
            continue
        if not isinstance(choice, int):
            first, last = choice.average
            window = [found[e] for e in sorted(found) if first <= e <= last]
            if not window:
                raise CombineError(
                    f"the analysis in {analysis} averages group {group!r} over [{first}, {last}], but {folder}"
                    f" has no checkpoint in that window (epochs there: {sorted(found)}); pass --{group} FILE"
                )
            out[group] = window
            continue
        if choice not in found:
            raise CombineError(
                f"the analysis in {analysis} picks epoch {choice} for group {group!r}, but {folder} has no"
                f" checkpoint_epoch_{choice}.pt (epochs there: {sorted(found)}); pass --{group} FILE"
            )
        out[group] = found[choice]
    return out


def resolve_selection(
    run: RunDir, selection_file: Path | None, groups: dict[str, Any], analysis: Path | None
) -> Selection:
    """The selection file, overridden by ``--group`` choices, with unnamed groups from the analysis."""
    choices: dict[str, Any] = {}
    if selection_file is not None:
        choices.update(load_selection(selection_file).choices())
    choices.update(groups)
    picks = analysis_picks(analysis)
    if picks is not None:
        for group in run.groups:
            if group not in choices and group in picks.root:
                choices[group] = picks.root[group]
    selection = parse_selection({g: (c.model_dump() if isinstance(c, AverageWindow) else c) for g, c in choices.items()})
    return selection


def load_run_spec(spec_path: Path | None, run: RunDir | None) -> Spec:
    """``--spec``, else the spec stored in the run directory."""
    if spec_path is not None:
        return load_spec(spec_path)
    stored = run.spec_path() if run is not None else None
    if stored is None:
        raise SpecError("no spec: pass --spec sweetspot.yaml (the run directory stores none)")
    return load_spec(stored)


def run(args: argparse.Namespace) -> int:
    check_output_file(args.output)
    check_unknown_options(args)
    parsed = [parse_group_option(text) for text in args.group]
    files = {g: v for g, v in parsed if isinstance(v, Path)}
    files.update({k[len(GROUP_FILE_PREFIX):]: Path(v) for k, v in vars(args).items() if k.startswith(GROUP_FILE_PREFIX) and v})
    epochs = {g: v for g, v in parsed if not isinstance(v, Path)}
    seed_form = bool(files) or args.default is not None
    if seed_form and (epochs or args.selection or args.checkpoint_dir):
        raise CombineError(
            "use either checkpoint files per group (--<group> FILE / --default FILE) or a run directory"
            " with epochs (--checkpoint-dir with --selection / --group G=EPOCH), not both"
        )
    run_dir = None
    if seed_form:
        if args.spec is None:
            raise CombineError(
                "the checkpoint-file form (--<group> FILE / --default FILE) needs the spec's groups: pass"
                " --spec sweetspot.yaml first"
            )
        spec = load_spec(args.spec)
        files = analysis_files(spec, files, args.default, args.analysis)
        plan = plan_from_files(spec, files, args.default)
    else:
        if args.checkpoint_dir is None:
            raise CombineError("pass --checkpoint-dir RUN with --selection/--group, or --spec with --<group> FILE options")
        run_dir = RunDir(args.checkpoint_dir)
        selection = resolve_selection(run_dir, args.selection, epochs, args.analysis)
        chosen_epochs = selection_epochs(selection, run_dir)
        plan = plan_from_run(run_dir, chosen_epochs, selection.to_json())
        spec = load_run_spec(args.spec, run_dir) if args.spec or run_dir.spec_path() else None
        for problem in coupling_violations(chosen_epochs, spec.couplings if spec else []):
            print(f"warning: {problem}; groups trained together co-adapt, so check the result with"
                  " `sweetspot evaluate`", file=sys.stderr)
    bn_batches = factory = None
    model_desc = "the spec's model"
    if args.update_bn:
        spec = spec or load_run_spec(args.spec, run_dir)
        model_desc = describe_spec_model(spec, args.spec or (run_dir.spec_path() if run_dir is not None else None))
        train = spec.load_data()["train"]
        batches = spec.batch_iterator()
        factory = spec.build_model

        def bn_batches() -> Any:
            return batches(train)

    provenance = combine(plan, args.output, args.format, bn_batches, factory, progress=True, model_desc=model_desc)
    print(f"wrote {args.output} ({plan.nbytes / 1e6:.1f} MB, {provenance['format']})")
    for group, choice in plan.choices.items():
        print(f"  {group}: {choice}")
    if "batchnorm_recomputed" in provenance:
        layers = provenance["batchnorm_recomputed"]
        print(f"BatchNorm statistics recomputed for {layers or 'no layer (no averaged or crossed group has one)'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_entry(
        "python -m rayjobs.combine_modules", DESCRIPTION, lambda p: add_arguments(p, argv), run, argv, EPILOG
    )


if __name__ == "__main__":
    sys.exit(main())
