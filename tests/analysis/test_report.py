from __future__ import annotations

import json
import re

import numpy as np
import pytest

from analysis.errors import AnalysisError
from analysis.pipeline import analyze_metrics
from analysis.report import group_block, module_title, report_markdown, write_outputs
from modules.spec.selection import load_selection
from tests.analysis._synthetic import EPOCHS, frame, make_spec

E = np.array(EPOCHS, dtype=float)


def small_analysis(thresholds=None):
    spec = make_spec({"backbone": [("val_loss", "min")], "emotion_head": [("val_f1", "max")]})
    loss = (E - 30) ** 2 / 900
    f1 = np.where(E <= 30, 0.3, 0.9)
    health = {g: {"grad_norm_ratio": np.full(len(E), 0.5), "update_ratio": np.full(len(E), 1e-3)} for g in spec.groups}
    return analyze_metrics(frame(EPOCHS, {"val_loss": loss, "val_f1": f1}, health), EPOCHS, list(spec.groups), spec, thresholds)


BLOCK = re.compile(
    r"^\[Module: (?P<title>[^\]]+)\]\n"
    r"- (Recommended epoch: (?P<epoch>\d+)|Recommended: average of epochs \d+-\d+)\n"
    r"- Reasons:\n"
    r"(?P<reasons>(  \d+\. .+\n)+)"
    r"- Confidence: (?P<confidence>\d+)%$"
)


def test_block_has_the_seed_form() -> None:
    analysis = small_analysis()
    block = group_block("backbone", analysis.groups["backbone"])
    match = BLOCK.match(block)
    assert match, block
    assert match["title"] == "Backbone" and match["epoch"] == "30"
    reasons = match["reasons"].splitlines()
    assert [r.split(".")[0].strip() for r in reasons] == [str(i) for i in range(1, len(reasons) + 1)]
    assert any("plateau 24-36, centre 30" in r for r in reasons)
    assert any("task val_loss low 0.000 at epoch 30" in r for r in reasons)
    # constant gradient-norm ratio 0.5: max/min = 1.0 over the run
    assert any(r.endswith("gradient norm ratio stable (grad_norm_ratio within 1.0x up to epoch 60)") for r in reasons)
    assert int(match["confidence"]) == round(analysis.groups["backbone"].final.confidence * 100)
    assert module_title("wrapper_emotion") == "Wrapper Emotion"


def test_report_opens_with_the_table_and_what_to_run_next() -> None:
    text = report_markdown(small_analysis())
    assert text.count("[Module: ") == 2
    header = "| group | pick | plateau | task_metrics | mcda | gradient_health | ensemble | plateau window |"
    lines = text.splitlines()
    # the summary table comes first (right after the title and one line about the run), the blocks after
    assert lines.index(header) == 4
    assert text.index(header) < text.index("## What to run next") < text.index("[Module: ")
    assert "sweetspot combine --checkpoint-dir run --selection selection.json" in text
    assert "--group backbone=30 --group emotion_head=46" in text
    assert re.search(r"^\| emotion_head \| \*\*46\*\* \(\d+%\) \| 46 \(\d+%\) .* \| 32-60 \|$", text, re.M)
    # gradient health is flat (healthy throughout): it abstains, and the table says so, not "60 (0%)"
    assert re.search(r"^\| backbone \| \*\*30\*\* \(\d+%\) \| 30 \(\d+%\) \| 30 \(\d+%\) \| 30 \(\d+%\) \| abstains \| 30 \(\d+%\) \| 24-36 \|", text, re.M)
    assert "(0%)" not in text


def test_thresholds_are_printed_as_json() -> None:
    analysis = small_analysis()
    line = next(line for line in report_markdown(analysis).splitlines() if line.startswith("Thresholds: "))
    assert line.startswith("Thresholds: `{\"plateau_variance\": 0.01, ") and line.endswith("`")
    assert json.loads(line.removeprefix("Thresholds: `").removesuffix("`")) == analysis.thresholds.to_json()


def test_outputs_written(tmp_path) -> None:
    analysis = small_analysis()
    written = write_outputs(analysis, tmp_path / "out", plots=False)
    data = json.loads(written["metrics"].read_text())
    assert data["format_version"] == 1
    assert data["thresholds"]["mcda_weights"] == {"loss": 0.3, "task": 0.4, "stability": 0.15, "gradient": 0.15}
    assert data["epochs"] == EPOCHS
    backbone = data["groups"]["backbone"]
    assert backbone["pick"] == 30 and backbone["plateau_window"] == [24, 36]
    assert backbone["metrics"]["grad_norm_ratio"] == [0.5] * 30
    assert data["model_metrics"]["val_loss"][EPOCHS.index(30)] == 0.0
    assert backbone["techniques"]["plateau"]["reasons"][0] == "plateau 24-36, centre 30"
    assert data["groups"]["emotion_head"]["plateau_window"] == [32, 60]
    assert load_selection(written["selection"]).to_json() == {"backbone": 30, "emotion_head": 46}
    assert written["report"].read_text().startswith("# Sweet-spot analysis")
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]



def test_what_to_run_next_names_the_selection_where_it_was_written(tmp_path) -> None:
    import shlex

    written = write_outputs(small_analysis(), tmp_path / "my analysis", plots=False)
    text = written["report"].read_text()
    quoted = shlex.quote(str(written["selection"]))
    assert quoted.startswith("'") and written["selection"].is_file()  # the folder has a space: quoted
    assert f"sweetspot combine --checkpoint-dir run --selection {quoted} --output" in text
    assert f"--selection {quoted} --output eval/" in text
    assert "--selection selection.json" not in text

def test_reanalysing_into_the_same_folder_leaves_only_this_runs_files(tmp_path) -> None:
    from analysis.report import MANIFEST_FILE

    out = tmp_path / "out"
    first = small_analysis()
    write_outputs(first, out)
    (out / "notes.txt").write_text("mine")  # a user's own file
    (out / "visualizations" / "my_figure.png").write_bytes(b"not ours")
    # the next analysis has a group renamed: the old group's PNG must not stay beside the new ones
    second = small_analysis()
    second.groups["renamed_head"] = second.groups.pop("emotion_head")
    write_outputs(second, out)
    pngs = sorted(p.name for p in (out / "visualizations").iterdir())
    assert pngs == ["backbone.png", "heatmap.png", "my_figure.png", "renamed_head.png"]
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / MANIFEST_FILE).read_text())["files"] == [
        "analysis_report.md", "module_metrics.json", "selection.json",
        "visualizations/backbone.png", "visualizations/heatmap.png", "visualizations/renamed_head.png",
    ]
    # without plots, the earlier PNGs go too (the folder holds this run's files only)
    write_outputs(second, out, plots=False)
    assert sorted(p.name for p in (out / "visualizations").iterdir()) == ["my_figure.png"]


def test_a_folder_with_analysis_output_but_no_manifest_is_refused_not_mixed(tmp_path) -> None:

    out = tmp_path / "old"
    (out / "visualizations").mkdir(parents=True)
    (out / "visualizations" / "stale_group.png").write_bytes(b"png")
    with pytest.raises(AnalysisError, match=r"already holds analysis output without \.sweetspot-analysis\.json.*new one"):
        write_outputs(small_analysis(), out)
    assert sorted(p.name for p in out.rglob("*")) == ["stale_group.png", "visualizations"]
    # a folder of the user's own unrelated files is fine
    other = tmp_path / "mine"
    other.mkdir()
    (other / "README.txt").write_text("x")
    write_outputs(small_analysis(), other, plots=False)
    assert (other / "README.txt").exists() and (other / "selection.json").exists()
