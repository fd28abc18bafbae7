from __future__ import annotations

import json

import numpy as np

from rayjobs import analyze_sweetspots, cli
from tests.analysis._synthetic import EPOCHS, frame, make_spec, write_run

E = np.array(EPOCHS, dtype=float)


def make_run(tmp_path):
    spec = make_spec({"a": [("val_loss", "min")], "b": [("val_f1", "max")]})
    metrics = frame(EPOCHS, {"val_loss": (E - 30) ** 2 / 900, "val_f1": np.where(E <= 30, 0.3, 0.9)})
    return write_run(tmp_path / "run", spec, metrics, EPOCHS)


def test_cli_writes_every_output(tmp_path, capsys) -> None:
    run = make_run(tmp_path)
    manifest_before = (run / "manifest.json").read_bytes()
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(
        json.dumps(
            {
                "plateau_variance": 0.01,
                "improvement_rate": 0.01,
                "stability_window": 5,
                "mcda_weights": {"loss": 0.3, "task": 0.4, "stability": 0.15, "gradient": 0.15},
                "voting_confidence": 0.5,
            }
        )
    )
    out = tmp_path / "analysis_results"
    code = cli.main(["analyze", "--checkpoint-dir", str(run), "--output", str(out), "--thresholds", str(thresholds)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        ".sweetspot-analysis.json",
        "analysis_report.md",
        "module_metrics.json",
        "selection.json",
        "visualizations",
    ]
    assert sorted(p.name for p in (out / "visualizations").iterdir()) == ["a.png", "b.png", "heatmap.png"]
    assert json.loads((out / "selection.json").read_text()) == {"a": 30, "b": 46}
    assert "a: 30" in capsys.readouterr().out
    assert (run / "manifest.json").read_bytes() == manifest_before


def test_seed_form_entrypoint_and_bad_inputs(tmp_path, capsys) -> None:
    run = make_run(tmp_path)
    assert analyze_sweetspots.main(["--checkpoint-dir", str(run), "--output", str(tmp_path / "o"), "--no-plots"]) == 0
    assert not (tmp_path / "o" / "visualizations").exists()
    assert analyze_sweetspots.main(["--checkpoint-dir", str(run), "--output", str(run / "inside")]) == 2
    assert "is inside the run directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert analyze_sweetspots.main(["--checkpoint-dir", str(empty), "--output", str(tmp_path / "o2")]) == 2
    assert "has neither manifest.json" in capsys.readouterr().err
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "checkpoint_epoch_2.pt").write_bytes(b"")
    assert analyze_sweetspots.main(["--checkpoint-dir", str(seed), "--output", str(tmp_path / "o3")]) == 2
    assert "pass --spec sweetspot.yaml" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"plateau_variance": -1}')
    assert analyze_sweetspots.main(["--checkpoint-dir", str(run), "--output", str(tmp_path / "o4"), "--thresholds", str(bad)]) == 2
    assert "plateau_variance is -1" in capsys.readouterr().err


def test_seed_checkpoint_folder_is_imported_on_the_fly(tmp_path) -> None:
    import torch

    from modules.spec.schema import dump_spec

    spec = make_spec({"a": [("val_loss", "min")], "b": [("val_loss", "min")]})
    spec_path = tmp_path / "sweetspot.yaml"
    spec_path.write_text(dump_spec(spec))
    seed = tmp_path / "checkpoints_final"
    seed.mkdir()
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(6, 3, generator=generator) + 1.0
    epochs = list(range(2, 22, 2))
    for epoch in epochs:
        weight = weight + 0.01 * torch.randn(6, 3, generator=generator)
        torch.save({"model_state_dict": {"a.weight": weight.clone(), "b.weight": 2 * weight}}, seed / f"checkpoint_epoch_{epoch}.pt")
    lines = ["epoch,val_loss"] + [f"{e},{(e - 10) ** 2 / 100 + 0.5}" for e in epochs]
    (seed / "metrics.csv").write_text("\n".join(lines) + "\n")
    before = sorted((p.name, p.stat().st_size) for p in seed.iterdir())
    out = tmp_path / "analysis_results"
    code = analyze_sweetspots.main(
        ["--checkpoint-dir", str(seed), "--output", str(out), "--spec", str(spec_path), "--no-plots"]
    )
    assert code == 0
    data = json.loads((out / "module_metrics.json").read_text())
    assert data["groups"]["a"]["health_source"] == "weights"
    assert data["groups"]["a"]["techniques"]["task_metrics"]["epoch"] == 10
    assert "computed from the weights" in (out / "module_metrics.json").read_text()
    assert "no recorded gradients" in (out / "analysis_report.md").read_text()
    assert sorted((p.name, p.stat().st_size) for p in seed.iterdir()) == before


def test_unreadable_run_directory_is_reported(tmp_path, capsys) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    assert analyze_sweetspots.main(["--checkpoint-dir", str(broken), "--output", str(tmp_path / "o")]) == 2
    assert "manifest.json is unreadable" in capsys.readouterr().err


def test_an_existing_file_as_output_is_refused_before_any_work(tmp_path, capsys) -> None:
    taken = tmp_path / "results.txt"
    taken.write_text("keep me")
    # the run does not even exist: the output is checked first, so that is the error reported
    assert analyze_sweetspots.main(["--checkpoint-dir", str(tmp_path / "no_run"), "--output", str(taken)]) == 2
    err = capsys.readouterr().err
    assert f"--output {taken} is an existing file; pass a folder for the results" in err
    assert "Traceback" not in err and taken.read_text() == "keep me"


def write_seed_folder(folder, epochs) -> None:
    import torch

    folder.mkdir()
    for epoch in epochs:
        weight = torch.full((6, 3), float(epoch))
        torch.save({"model_state_dict": {"a.weight": weight, "b.weight": 2 * weight}}, folder / f"checkpoint_epoch_{epoch}.pt")
    lines = ["epoch,val_loss"] + [f"{e},{(e - 10) ** 2 / 100 + 0.5}" for e in epochs]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_errors_about_an_imported_folder_name_that_folder_not_the_temporary_import(tmp_path, capsys) -> None:
    from modules.spec.schema import dump_spec

    spec_path = tmp_path / "sweetspot.yaml"
    spec_path.write_text(dump_spec(make_spec({"a": [("val_loss", "min")], "b": [("val_loss", "min")]})))
    seed = tmp_path / "checkpoints_final"
    write_seed_folder(seed, [2, 4, 6, 8])
    code = analyze_sweetspots.main(["--checkpoint-dir", str(seed), "--output", str(tmp_path / "o"), "--spec", str(spec_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: {seed} has 4 checkpoint(s) (epochs [2, 4, 6, 8]); the statistics need at least 5" in err
    assert "sweetspot-import-" not in err


def test_a_typo_in_group_metrics_names_the_spec_file_and_the_close_metric(tmp_path, capsys) -> None:
    from modules.spec.schema import dump_spec

    run = make_run(tmp_path)
    spec_path = tmp_path / "sweetspot.yaml"
    spec_path.write_text(dump_spec(make_spec({"a": [("val_loss", "min")], "b": [("val_f1_score", "max")]})))
    out = tmp_path / "o"
    code = analyze_sweetspots.main(["--checkpoint-dir", str(run), "--output", str(out), "--spec", str(spec_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: {spec_path}: group_metrics for group 'b' names metric 'val_f1_score', which is recorded at no" in err
    assert "did you mean 'val_f1'?" in err and "Fix the metric name in the spec's group_metrics for 'b'" in err
    assert not out.exists()


def test_summary_says_when_a_coupling_moved_a_pick(tmp_path, capsys) -> None:
    # as in tests/analysis/test_couplings: backbone's 12 leads coupling A (gap 4); heads' ensemble
    # pick 40 (61%) is moved to 16 (here health comes from the run's weights, so backbone has 96%)
    from tests.analysis.test_couplings import coupled_spec

    metrics = frame(EPOCHS, {"val_loss": (E - 12) ** 2 / 900, "val_f1": 1 - (E - 40) ** 2 / 900})
    run = write_run(tmp_path / "run", coupled_spec(4), metrics, EPOCHS)
    out = tmp_path / "o"
    assert analyze_sweetspots.main(["--checkpoint-dir", str(run), "--output", str(out), "--no-plots"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["backbone: 12 (96%)", "heads: 16 (moved by coupling A from 40, which had 61%)"]
    assert json.loads((out / "selection.json").read_text()) == {"backbone": 12, "heads": 16}
