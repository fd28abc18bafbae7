"""End to end on the demo run: analyse, combine the analysis's selection, evaluate against every baseline."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from modules.demo.model import build_model
from modules.rundir.run_dir import RunDir
from rayjobs import cli

ROOT = Path(__file__).resolve().parents[2]


def test_demo_analyse_combine_evaluate(demo_run: Path, tmp_path: Path, capsys) -> None:
    analysis = tmp_path / "analysis"
    assert cli.main(["analyze", "--checkpoint-dir", str(demo_run), "--output", str(analysis), "--no-plots"]) == 0
    selection = json.loads((analysis / "selection.json").read_text())
    combined = tmp_path / "combined.safetensors"
    # no --selection and no --group: every group takes the analysis's pick
    code = cli.main(["combine", "--checkpoint-dir", str(demo_run), "--analysis", str(analysis), "--output", str(combined), "--update-bn", "--trust-run-spec"])
    assert code == 0, capsys.readouterr().err
    provenance = json.loads(load_file_metadata(combined))
    assert provenance["selection"] == selection and provenance["update_bn"] is True
    state = load_file(combined)
    build_model().load_state_dict(state, strict=True)
    run = RunDir(demo_run)
    picked = {g: c for g, c in selection.items() if isinstance(c, int)}
    for group, epoch in picked.items():
        if group != "backbone":  # BatchNorm lives in the backbone; its statistics were recomputed
            for key, tensor in run.read_group(epoch, group).items():
                assert torch.equal(state[key], tensor), key

    out = tmp_path / "eval"
    capsys.readouterr()
    # no --analysis: evaluate analyses the run itself; its warnings come as plain `warning:` lines
    code = cli.main(["evaluate", "--checkpoint-dir", str(demo_run), "--model", str(combined),
                     "--output", str(out), "--resamples", "300", "--no-progress", "--trust-run-spec"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "warning: group 'wrapper_emotion'" in printed.err
    assert "AnalysisWarning" not in printed.err and "series[group]" not in printed.err
    assert all(line.startswith("warning: ") for line in printed.err.splitlines())
    assert printed.out.startswith("Lowest test loss: ") and "**" not in printed.out
    data = json.loads((out / "evaluation.json").read_text())
    kinds = [c["kind"] for c in data["candidates"]]
    assert kinds == ["combination", "single", "single", "single", "best_single", "last", "plateau", "uniform", "lawa", "greedy"]
    assert [c["name"] for c in data["candidates"][1:4]] == ["epoch 30", "epoch 40", "epoch 50"]
    assert len(data["comparisons"]) == 9
    assert data["combination_provenance"]["selection"] == selection
    for cand in data["candidates"]:
        assert {"loss"} <= set(cand["metrics"]["test"]) and len(cand["metrics"]["test"]) > 3
    report = (out / "evaluation_report.md").read_text()
    assert "| candidate | test loss | val loss |" in report and "greedy soup" in report
    described = report.split("## Candidates", 1)[1]
    combination_line = next(line for line in described.splitlines() if line.startswith("- **combination**"))
    assert f"model file `{combined}`, combined from run `{demo_run}`: " in combination_line
    for group, choice in picked.items():
        assert f"{group} {choice}" in combination_line
    assert "- **uniform soup (30)**: all 30 recorded checkpoints averaged" in described
    assert "- **LAWA (last 5)**: latest weight averaging: the last 5 checkpoints averaged (epochs 52, 54, 56, 58, 60)." in described
    assert (out / "evaluation.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "evaluation.png").stat().st_size > 5000


def load_file_metadata(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        return handle.metadata()["sweetspot_provenance"]


def test_seed_form_and_refusals(demo_run: Path, tmp_path: Path, capsys) -> None:
    from rayjobs import combine_modules

    run = RunDir(demo_run)
    for epoch in (40, 44):
        torch.save({"epoch": epoch, "model_state_dict": run.state_dict(epoch)}, tmp_path / f"checkpoint_epoch_{epoch}.pt")
    out = tmp_path / "combined_model.pt"
    command = [sys.executable, "-m", "rayjobs.combine_modules", "--spec", str(demo_run / "sweetspot.yaml"),
               "--backbone", str(tmp_path / "checkpoint_epoch_44.pt"), "--heads", str(tmp_path / "checkpoint_epoch_40.pt"),
               "--default", str(tmp_path / "checkpoint_epoch_40.pt"), "--output", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    state = torch.load(out, weights_only=True)
    assert torch.equal(state["backbone.0.weight"], run.read_tensor(44, "backbone", "backbone.0.weight"))
    assert torch.equal(state["heads.emotion.0.weight"], run.read_tensor(40, "heads", "heads.emotion.0.weight"))
    assert json.loads(Path(f"{out}.provenance.json").read_text())["selection"]["backbone"].endswith("checkpoint_epoch_44.pt")

    # the refusal, in this process (the command line itself was run just above)
    capsys.readouterr()
    without_default = command[3:-4] + ["--output", str(tmp_path / "x.pt")]
    assert combine_modules.main(without_default) == 2
    assert "no checkpoint given for groups ['analyzers', 'dsp_kalman'" in capsys.readouterr().err

    inside = cli.main(["combine", "--checkpoint-dir", str(demo_run), "--group", "backbone=44", "--output", str(demo_run / "c.safetensors")])
    assert inside == 2


def test_seed_form_takes_unnamed_groups_from_the_analysis(tmp_path: Path, capsys) -> None:
    from rayjobs import combine_modules
    from tests.modules import _tiny

    run = RunDir(_tiny.record_run(tmp_path / "run", epochs=4))
    seed = tmp_path / "seed"
    seed.mkdir()
    for epoch in run.epochs:
        torch.save({"epoch": epoch, "model_state_dict": run.state_dict(epoch)}, seed / f"checkpoint_epoch_{epoch}.pt")
    analysis = tmp_path / "analysis"
    analysis.mkdir()
    (analysis / "selection.json").write_text(json.dumps({"encoder": 1, "middle": 2, "head": 3}))
    out = tmp_path / "combined_model.pt"
    base = ["--spec", str(run.path / "sweetspot.yaml"), "--head", str(seed / "checkpoint_epoch_4.pt"), "--analysis", str(analysis)]
    assert combine_modules.main([*base, "--output", str(out)]) == 0, capsys.readouterr().err
    state = torch.load(out, weights_only=True)
    for group, epoch in {"encoder": 1, "middle": 2, "head": 4}.items():  # the named --head wins over the pick
        for key, tensor in run.read_group(epoch, group).items():
            assert torch.equal(state[key], tensor), key

    (seed / "checkpoint_epoch_2.pt").unlink()
    assert combine_modules.main([*base, "--output", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "picks epoch 2 for group 'middle'" in err and "no checkpoint_epoch_2.pt" in err and "name a file for group 'middle'" in err
    assert not (tmp_path / "x.pt").exists()


def test_help_shows_examples_of_both_forms(capsys) -> None:
    from rayjobs import combine_modules, evaluate_combined

    for main, needles in [
        (cli.main, ["sweetspot analyze", "sweetspot combine --checkpoint-dir"]),
        (combine_modules.main, ["--group backbone=44", "--backbone checkpoint_epoch_44.pt", "--analysis DIR"]),
        (evaluate_combined.main, ["--model combined_model.pt", "greedy soup", "held-out test split"]),
    ]:
        try:
            main(["--help"])
        except SystemExit as done:
            assert done.code == 0
        text = capsys.readouterr().out
        for needle in needles:
            assert needle in text, (main, needle)


def test_output_paths_are_refused_before_any_work(demo_run: Path, tmp_path: Path, capsys) -> None:
    existing_file = tmp_path / "report.txt"
    existing_file.write_text("keep me")
    # evaluate --output is a folder: an existing file is refused at once (before the --model check too)
    code = cli.main(["evaluate", "--checkpoint-dir", str(demo_run), "--model", str(tmp_path / "missing.safetensors"),
                     "--output", str(existing_file)])
    assert code == 2
    assert f"--output {existing_file} is an existing file; pass a folder" in capsys.readouterr().err
    assert existing_file.read_text() == "keep me"
    # combine --output is a file: an existing folder (with or without the trailing slash) is refused
    folder = tmp_path / "out"
    folder.mkdir()
    for target in (str(folder), f"{folder}/"):
        code = cli.main(["combine", "--checkpoint-dir", str(demo_run), "--group", "backbone=44", "--output", target])
        assert code == 2
        assert f"--output {folder} is a folder; pass a file name, e.g. {folder / 'combined.safetensors'}" in capsys.readouterr().err
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out", "report.txt"]


def test_seed_form_without_spec_says_to_pass_the_spec_first(tmp_path: Path, capsys) -> None:
    from rayjobs import combine_modules

    out = tmp_path / "c.pt"
    assert combine_modules.main(["--backbone", "x.pt", "--heads", "y.pt", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --backbone, --heads: no such option without a spec.")
    assert "The --<group> FILE options come from the groups of the spec, so pass --spec sweetspot.yaml first" in err
    # the same through the `sweetspot` command (options read from the real command line)
    done = subprocess.run([sys.executable, "-m", "rayjobs.cli", "combine", "--backbone", "x.pt", "--output", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "pass --spec sweetspot.yaml first" in done.stderr
    assert "unrecognized arguments" not in done.stderr and not out.exists()


def test_seed_form_option_that_is_no_group_of_the_spec(demo_run: Path, tmp_path: Path, capsys) -> None:
    from rayjobs import combine_modules

    spec = demo_run / "sweetspot.yaml"
    code = combine_modules.main(["--spec", str(spec), "--decoder", "x.pt", "--output", str(tmp_path / "c.pt")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--decoder: neither an option of combine nor a group of spec 'demo' ({spec})" in err
    assert "--backbone --heads --analyzers" in err


def test_evaluate_checks_the_model_file_before_the_analysis(demo_run: Path, tmp_path: Path, capsys) -> None:
    from tests.modules import _tiny

    out = tmp_path / "eval"
    missing = tmp_path / "combined.safetensors"
    code = cli.main(["evaluate", "--checkpoint-dir", str(demo_run), "--model", str(missing), "--output", str(out)])
    printed = capsys.readouterr()
    assert code == 2
    assert printed.err == (
        f"error: --model {missing} does not exist; pass the combined model file (e.g."
        " combined.safetensors), or evaluate a selection (selection.json) instead\n"
    )
    assert not out.exists()

    # weights of another model: named with the spec (file and model_args) and the run's stored spec
    other = tmp_path / "other.pt"
    torch.save(_tiny.build_model().state_dict(), other)
    code = cli.main(["evaluate", "--checkpoint-dir", str(demo_run), "--model", str(other), "--output", str(out), "--trust-run-spec"])
    printed = capsys.readouterr()
    assert code == 2 and not out.exists() and "warning" not in printed.err  # the analysis never ran
    err = printed.err
    assert err.startswith(
        f"error: the weights in {other} do not fit the model of spec 'demo' ({demo_run / 'sweetspot.yaml'}:"
        " modules.demo.model:build_model with model_args {'width': 64, 'seed': 0}): "
    )
    assert "keys the model has but the weights lack ['backbone.0.weight'" in err
    assert "keys the weights have but the model lacks ['encoder.0.weight'" in err
    assert "[]" not in err and "probe" not in err and "combine with" not in err and "shape mismatch" not in err


def test_evaluate_with_a_spec_that_builds_another_model(demo_run: Path, tmp_path: Path, capsys) -> None:
    spec = tmp_path / "narrow.yaml"
    spec.write_text((demo_run / "sweetspot.yaml").read_text().replace("width: 64", "width: 32"))
    out = tmp_path / "eval"
    code = cli.main(["evaluate", "--checkpoint-dir", str(demo_run), "--spec", str(spec), "--group", "backbone=10",
                     "--group", "heads=20", "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.startswith(
        f"error: the weights in run directory {demo_run} do not fit the model of spec 'demo' ({spec}:"
        " modules.demo.model:build_model with model_args {'width': 32, 'seed': 0}): "
    )
    assert "shape mismatches ['backbone.0.weight [256, 24] vs model [128, 24]'" in err
    assert "[]" not in err and "Pass the spec the run was recorded with" in err


def test_combine_warns_when_a_selection_breaks_a_coupling(demo_run: Path, tmp_path: Path, capsys) -> None:
    # the demo couples backbone and heads with max_epoch_gap 0
    others = [
        f"--group={g}=60"
        for g in ("analyzers", "dsp_kalman", "wrapper_emotion", "wrapper_bentham", "wrapper_surd", "wrapper_regret")
    ]
    base = ["combine", "--checkpoint-dir", str(demo_run), "--group", "backbone=10", *others]
    assert cli.main([*base, "--group", "heads=40", "--output", str(tmp_path / "apart.safetensors")]) == 0
    err = capsys.readouterr().err
    assert "warning: coupling A allows 0 epochs between its groups, but the selection puts backbone at 10, heads at 40" in err
    assert cli.main([*base, "--group", "heads=10", "--output", str(tmp_path / "together.safetensors")]) == 0
    assert "coupling" not in capsys.readouterr().err


def test_evaluate_code_that_raises_shows_its_traceback_and_what_it_was_scoring(tmp_path: Path, capsys) -> None:
    import os

    import yaml

    from tests.modules import _tiny
    from tests.search import _faulty

    run = _tiny.record_run(tmp_path / "run")
    spec = tmp_path / "faulty.yaml"
    spec.write_text(yaml.safe_dump(_faulty.spec(fail_in_process=os.getpid()).model_dump(mode="json", exclude_none=True)))
    code = cli.main(["evaluate", "--checkpoint-dir", str(run), "--spec", str(spec), "--group", "encoder=2",
                     "--group", "middle=2", "--group", "head=3", "--output", str(tmp_path / "eval"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    traceback, error = err.rstrip().rsplit("\n", 1)
    assert traceback.startswith("Traceback (most recent call last):") and 'raise ValueError("planted failure in this process")' in traceback
    assert re.match(
        r"error: evaluate callable 'tests.search._faulty:evaluate' raised ValueError: planted failure in this process on the"
        r' val split with the epochs \{"encoder":\[\d+\],"head":\[\d+\],"middle":\[\d+\]\} of run .*; fix it', error
    )
