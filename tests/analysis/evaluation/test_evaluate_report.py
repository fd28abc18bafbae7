"""Evaluate a real tiny run against every baseline; report wording follows the interval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import sweetspot
from analysis.evaluation.baselines import AnalysisInfo, Candidate, nearest_recorded
from analysis.evaluation.evaluate import (
    CandidateEvaluator,
    Evaluated,
    EvaluationResult,
    compare,
    run_evaluation,
)
from analysis.evaluation.plots import MEAN_MARKER, VERDICT_COLOURS, evaluation_figure
from analysis.evaluation.report import (
    _num,
    describe_candidate,
    headline,
    report_markdown,
    shrinkage,
    write_report,
)
from modules.rundir.run_dir import RunDir
from modules.spec.selection import parse_selection
from tests.modules import _tiny


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[EvaluationResult, dict[str, Path]]:
    run = RunDir(_tiny.record_run(tmp_path_factory.mktemp("ev") / "run", epochs=6))
    evaluator = CandidateEvaluator(_tiny.spec(), run)
    analysis = AnalysisInfo(parse_selection({"encoder": 5, "middle": 4, "head": 6}), {"encoder": (3, 5), "middle": None, "head": (5, 6)}, "by hand")
    combination = Candidate("combination", "combination", {"encoder": [3, 4, 5], "middle": [4], "head": [6]}, recompute_bn=True)
    result = run_evaluation(evaluator, combination, [2, 4, 40], analysis, resamples=300, seed=0, progress=False)
    paths = write_report(result, tmp_path_factory.mktemp("out") / "eval", {"run_dir": str(run.path)})
    return result, paths


def test_every_baseline_is_evaluated(evaluated) -> None:
    result, paths = evaluated
    data = json.loads(paths["json"].read_text())
    kinds = [c["kind"] for c in data["candidates"]]
    # the last epoch is epoch 6: the same weights, evaluated once under both names
    assert kinds == ["combination", "single", "single", "single", "best_single", "plateau", "uniform", "lawa", "greedy"]
    names = [c["name"] for c in data["candidates"]]
    assert names[1:4] == ["epoch 2", "epoch 4", "epoch 6 = last epoch (6)"]  # 40 -> nearest recorded 6
    assert data["candidates"][3]["same_weights_as"] == ["last epoch (6)"]
    plateau = data["candidates"][5]
    assert plateau["epochs"] == {"encoder": [3, 4, 5], "middle": [4], "head": [5, 6]} and plateau["recompute_bn"]
    assert data["candidates"][7]["epochs"]["head"] == [2, 3, 4, 5, 6]
    for cand in data["candidates"]:
        m = cand["metrics"]
        assert set(m) == {"train", "val", "test"} and {"loss", "mae"} <= set(m["test"])
        assert cand["overfitting_gap"] == pytest.approx(m["val"]["loss"] - m["train"]["loss"])
    # best single is the lowest validation loss among single epochs, by hand from a fresh evaluation
    run = RunDir(Path(data["run_dir"]))
    model, splits = _tiny.build_model(), _tiny.load_data()
    val = {}
    for epoch in run.epochs:
        model.load_state_dict(run.state_dict(epoch))
        val[epoch] = _tiny.evaluate(model, splits["val"])["loss"]
    best = min(val, key=val.get)
    assert names[4] == f"best single on val ({best})"
    assert data["candidates"][4]["metrics"]["val"]["loss"] == pytest.approx(val[best])
    comb = data["candidates"][0]["metrics"]["test"]["loss"]
    for comp, cand in zip(data["comparisons"], data["candidates"][1:]):
        base = cand["metrics"]["test"]["loss"]
        assert comp["percent_difference"]["test"]["loss"] == pytest.approx(100 * (comb - base) / base)
        # the mean per-example difference equals the difference of the mean losses
        assert comp["test_loss_difference"]["mean_difference"] == pytest.approx(comb - base, abs=1e-6)
        lo, hi = comp["test_loss_difference"]["low"], comp["test_loss_difference"]["high"]
        assert comp["verdict"] == ("no significant difference" if lo <= 0 <= hi else ("combination better" if hi < 0 else "baseline better"))
    steps = data["greedy_soup"]["steps"]
    assert len(steps) == 6 and steps[0]["kept"]
    assert data["greedy_soup"]["epochs"] == sorted(s["epoch"] for s in steps if s["kept"])


def test_report_table_and_png(evaluated) -> None:
    result, paths = evaluated
    text = paths["report"].read_text()
    assert "| candidate | test loss | val loss | gap (val − train) |" in text
    for item in result.evaluated:
        assert item.candidate.name in text
    png = paths["plot"].read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_report_says_what_each_candidate_is(evaluated) -> None:
    result, paths = evaluated
    text = paths["report"].read_text()
    section = text.split("## Candidates\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    lines = {line.split("**")[1]: line.split("**: ", 1)[1] for line in section}
    assert list(lines) == [e.candidate.name for e in result.evaluated]
    assert lines["combination"] == (
        "built here from the selection: encoder average of 3–5 (3 checkpoints), middle 4, head 6."
        " BatchNorm statistics recomputed on the train split."
    )
    assert lines["epoch 4"] == "the checkpoint of epoch 4, every group."
    assert "encoder average of 3–5 (3 checkpoints), middle 4, head average of 5–6 (2 checkpoints)." in lines["plateau average"]
    assert lines["uniform soup (6)"] == "all 6 recorded checkpoints averaged with equal weight (epochs 1, 2, 3, 4, 5, 6)."
    assert lines["LAWA (last 5)"] == "latest weight averaging: the last 5 checkpoints averaged (epochs 2, 3, 4, 5, 6)."
    kept = result.greedy.epochs
    greedy = lines[f"greedy soup ({len(kept)})"]
    assert greedy.startswith(f"{len(kept)} checkpoint") and greedy.endswith(f"kept epochs {', '.join(map(str, kept))}.")
    best = next(e for e in result.evaluated if e.candidate.kind == "best_single")
    assert lines[best.candidate.name] == f"the single checkpoint with the best validation loss: epoch {best.candidate.epochs['head'][0]}."
    assert "what survives selection" not in text and "the test figure is the honest one" in text


def test_combination_from_a_file_is_described_from_its_provenance() -> None:
    provenance = {
        "run_dir": None,
        "sources": {
            "backbone": [{"path": "ck/checkpoint_epoch_44.pt", "epoch": 44, "sha256": "x"}],
            "heads": [{"path": "ck/checkpoint_epoch_40.pt", "epoch": 40}, {"path": "ck/checkpoint_epoch_42.pt", "epoch": 42}],
            "tail": [{"path": "ck/final.pt", "epoch": None}],
        },
        "batchnorm_recomputed": ["backbone.1"],
    }
    losses = np.ones(4)
    metrics = {s: {"loss": 1.0} for s in ("train", "val", "test")}
    result = EvaluationResult("loss", "min", [], [], None)
    item = Evaluated(Candidate("combination", "combination", model_path=Path("c.pt"), provenance=provenance), metrics, losses)
    assert describe_candidate(item, result) == (
        "model file `c.pt`, combined from checkpoint files: backbone 44, heads average of 40–42 (2 checkpoints),"
        " tail final.pt. BatchNorm statistics recomputed at combine time for backbone.1."
    )
    bare = Evaluated(Candidate("combination", "combination", model_path=Path("c.pt")), metrics, losses)
    assert "records no provenance" in describe_candidate(bare, result)


@pytest.mark.parametrize(
    ("value", "text"),
    [(2.6, "2.600"), (-1.65, "-1.650"), (0.09397, "0.09397"), (1234.0, "1234"), (12345.6, "1.235e+04"),
     (-0.0098641, "-0.009864"), (float("nan"), "n/a"), (float("inf"), "n/a")],
)
def test_numbers_have_four_significant_digits(value: float, text: str) -> None:
    assert _num(value) == text


def test_table_intervals_use_four_significant_digits(evaluated) -> None:
    import re

    _, paths = evaluated
    intervals = re.findall(r"\| \[([^\]]+)\] \|", paths["report"].read_text())
    assert len(intervals) == 8
    for pair in intervals:
        for number in pair.split(", "):
            digits = number.lstrip("-").replace(".", "").lstrip("0")
            assert len(digits) == 4, number


def synthetic(comb_losses: np.ndarray, base_losses: np.ndarray) -> EvaluationResult:
    def item(name: str, losses: np.ndarray) -> Evaluated:
        metrics = {s: {"loss": float(losses.mean())} for s in ("train", "val", "test")}
        return Evaluated(Candidate(name, name), metrics, losses)

    comb, base = item("combination", comb_losses), item("epoch 40", base_losses)
    return EvaluationResult("loss", "min", [comb, base], [compare(comb, base, 500, 0)], None)


def test_report_says_no_significant_difference_when_interval_contains_zero() -> None:
    rng = np.random.default_rng(0)
    base = rng.exponential(1.0, 300)
    comb = base + rng.normal(0, 0.2, 300)
    comb = comb - (comb - base).mean() - 0.001  # combination lower by 0.001: not a supported gain
    result = synthetic(comb, base)
    assert result.comparisons[0].verdict == "no significant difference"
    line = headline(result)
    assert "**no significant difference**" in line and "better" not in line
    plain = headline(result, markdown=False)
    assert "*" not in plain and "no significant difference" in plain and plain == line.replace("**", "")
    assert "| epoch 40 |" in report_markdown(result) and "no significant difference |" in report_markdown(result)


def test_report_claims_gain_only_when_interval_excludes_zero() -> None:
    rng = np.random.default_rng(0)
    base = rng.exponential(1.0, 300)
    result = synthetic(base * 0.5, base)
    assert result.comparisons[0].verdict == "combination better"
    assert "**the combination is better** by -50.00% loss" in headline(result)


def test_nearest_recorded_prefers_earlier_on_tie() -> None:
    assert nearest_recorded([2, 4, 6], 3) == 2
    assert nearest_recorded([2, 4, 6], 50) == 6


def test_every_unrecorded_single_epoch_is_noted_with_what_it_maps_to(tmp_path: Path) -> None:
    from analysis.evaluation.baselines import single_epoch_candidates

    run = RunDir(_tiny.record_run(tmp_path / "run", epochs=6))
    # the defaults 30, 40 and 50 on a 6-epoch run all map to 6: one candidate, one note naming all three
    (only,) = single_epoch_candidates(run, [30, 40, 50])
    assert only.name == "epoch 6"
    assert only.notes == ["epochs 30, 40 and 50 not recorded; the nearest recorded for each is 6 (evaluated once)"]
    two, six = single_epoch_candidates(run, [2, 6, 40])  # 6 is recorded, 40 maps to it
    assert (two.name, two.notes) == ("epoch 2", [])
    assert (six.name, six.notes) == ("epoch 6", ["epoch 40 not recorded; nearest recorded is 6"])


def test_shrinkage_compares_with_the_baseline_best_on_validation() -> None:
    rng = np.random.default_rng(1)
    losses = rng.exponential(1.0, 200)

    def item(name: str, val: float, test: float) -> Evaluated:
        metrics = {"train": {"loss": val}, "val": {"loss": val}, "test": {"loss": test}}
        return Evaluated(Candidate(name, name), metrics, losses * test)

    comb = item("combination", val=0.90, test=1.00)
    best_on_val = item("epoch 20", val=1.00, test=1.05)  # a user would have picked this one
    best_on_test = item("epoch 30", val=1.20, test=0.98)
    comparisons = [compare(comb, b, 200, 0) for b in (best_on_val, best_on_test)]
    result = EvaluationResult("loss", "min", [comb, best_on_val, best_on_test], comparisons, None)
    kept = shrinkage(result)
    assert kept["baseline"] == "epoch 20"
    assert kept["val_percent"] == pytest.approx(-10.0)  # (0.90 - 1.00) / 1.00
    assert kept["test_percent"] == pytest.approx((1.00 - 1.05) / 1.05 * 100)
    assert "on validation and -4.76% on test" in headline(result)


def test_plot_colours_each_difference_by_its_verdict() -> None:
    rng = np.random.default_rng(0)
    comb = rng.exponential(1.0, 300)

    def item(name: str, losses: np.ndarray) -> Evaluated:
        return Evaluated(Candidate(name, name), {s: {"loss": float(losses.mean())} for s in ("train", "val", "test")}, losses)

    combination = item("combination", comb)
    noise = rng.normal(0, 0.2, 300)
    baselines = [item("worse", comb * 2), item("better", comb * 0.5), item("same", comb + noise - noise.mean() + 0.0005)]
    comparisons = [compare(combination, b, 300, 0) for b in baselines]
    assert [c.verdict for c in comparisons] == ["combination better", "baseline better", "no significant difference"]
    fig = evaluation_figure(EvaluationResult("loss", "min", [combination, *baselines], comparisons, None))
    right = fig.axes[1]
    assert [t.get_text() for t in fig.axes[2].get_legend().get_texts()] == list(VERDICT_COLOURS)
    from matplotlib.colors import to_rgba

    markers = [line for line in right.get_lines() if line.get_gid() == "mean"]
    assert len(markers) == 3
    for row, (line, comp) in enumerate(zip(markers, comparisons)):
        # a marker at the mean, in the verdict's colour, so even a tiny difference is visible
        assert list(line.get_xdata()) == [comp.test_interval.mean_difference] and list(line.get_ydata()) == [row]
        assert line.get_marker() == MEAN_MARKER
        assert to_rgba(line.get_markerfacecolor()) == to_rgba(VERDICT_COLOURS[comp.verdict])
    intervals = [line for line in right.get_lines() if line.get_gid() == "interval"]
    assert [list(line.get_xdata()) for line in intervals] == [[c.test_interval.low, c.test_interval.high] for c in comparisons]
    assert [to_rgba(line.get_color()) for line in intervals] == [to_rgba(VERDICT_COLOURS[c.verdict]) for c in comparisons]
    bars = [to_rgba(patch.get_facecolor())[:3] for patch in right.patches]
    assert bars == [to_rgba(VERDICT_COLOURS[c.verdict])[:3] for c in comparisons]


def test_the_greedy_soup_is_written_as_a_selection_combine_builds(evaluated) -> None:
    result, paths = evaluated
    greedy = next(e for e in result.evaluated if e.candidate.kind == "greedy")
    selection = sweetspot.load_selection(paths["greedy_selection"])  # the `_about` note is ignored
    assert selection.to_json() == {g: {"epochs": result.greedy.epochs} for g in ("encoder", "middle", "head")}
    assert result.greedy.epochs == [2, 5, 6]  # not a window: only the epoch-set form can say it
    assert "`greedy_selection.json`; build it with `sweetspot combine" in paths["report"].read_text()
    run = json.loads(paths["json"].read_text())["run_dir"]
    built = sweetspot.combine(run, selection, update_bn=greedy.candidate.recompute_bn, spec=_tiny.spec())
    model = _tiny.build_model()
    model.load_state_dict(built.state_dict)
    test_loss = _tiny.evaluate(model, _tiny.load_data()["test"])["loss"]
    assert test_loss == pytest.approx(greedy.metrics["test"]["loss"], rel=1e-5)


def test_a_plateau_average_identical_to_the_combination_is_not_compared_with_it(tmp_path: Path) -> None:
    run = RunDir(_tiny.record_run(tmp_path / "run", epochs=6))
    analysis = AnalysisInfo(parse_selection({"encoder": 5, "middle": 4, "head": 6}), {"encoder": (3, 5), "middle": None, "head": (5, 6)}, "by hand")
    plateau = {"encoder": [3, 4, 5], "middle": [4], "head": [5, 6]}
    combination = Candidate("combination", "combination", plateau, recompute_bn=True)
    result = run_evaluation(CandidateEvaluator(_tiny.spec(), run), combination, [6], analysis, resamples=100, progress=False)
    assert result.evaluated[0].candidate.name == "combination = plateau average"
    assert [c.baseline for c in result.comparisons if "plateau" in c.baseline] == []
    assert [e.candidate.name for e in result.evaluated].count("epoch 6 = last epoch (6)") == 1
    assert "| **combination = plateau average** |" in report_markdown(result)


def test_the_deciding_comparisons_have_a_readable_panel_of_their_own() -> None:
    rng = np.random.default_rng(1)
    comb = rng.exponential(1.0, 400)

    def item(name: str, kind: str, losses: np.ndarray) -> Evaluated:
        return Evaluated(Candidate(name, kind), {s: {"loss": float(losses.mean())} for s in ("train", "val", "test")}, losses)

    baselines = [
        item("epoch 1", "single", comb * 40),  # far worse: sets the scale of the full panel
        item("best single on val (9)", "best_single", comb * 1.01 + rng.normal(0, 0.01, 400)),
        item("greedy soup (3)", "greedy", comb * 0.99),
    ]
    combination = item("combination", "combination", comb)
    comparisons = [compare(combination, b, 300, 0) for b in baselines]
    fig = evaluation_figure(EvaluationResult("loss", "min", [combination, *baselines], comparisons, None))
    deciding = fig.axes[2]
    assert [t.get_text() for t in deciding.get_yticklabels()] == ["best single on val (9)", "greedy soup (3)"]
    means = [line.get_xdata()[0] for line in deciding.get_lines() if line.get_gid() == "mean"]
    expected = [100 * c.test_interval.mean_difference / b.test_losses.mean() for b, c in zip(baselines[1:], comparisons[1:])]
    assert means == pytest.approx(expected)
    low, high = deciding.get_xlim()
    widths = [c.test_interval.high - c.test_interval.low for c in comparisons[1:]]
    # each interval spans a visible part of its own axis (in the full panel it is under 0.1% of it)
    assert all(100 * w / b.test_losses.mean() > 0.05 * (high - low) for w, b in zip(widths, baselines[1:]))
    full_low, full_high = fig.axes[1].get_xlim()
    assert all(w < 0.01 * (full_high - full_low) for w in widths)


def test_a_long_merged_label_keeps_the_png_readable(tmp_path: Path) -> None:
    from matplotlib.image import imread

    from analysis.evaluation.plots import LABEL_WIDTH, plot_evaluation

    rng = np.random.default_rng(2)
    comb = rng.exponential(1.0, 200)

    def item(name: str, kind: str, losses: np.ndarray) -> Evaluated:
        return Evaluated(Candidate(name, kind), {s: {"loss": float(losses.mean())} for s in ("train", "val", "test")}, losses)

    merged = "epoch 15 = last epoch (15) = best single on val (15) = LAWA (last 5) = plateau average = greedy soup (1)"
    combination = item("combination", "combination", comb)
    baselines = [item(merged, "single", comb * 1.1), item("uniform soup (15)", "uniform", comb * 0.95)]
    comparisons = [compare(combination, b, 200, 0) for b in baselines]
    result = EvaluationResult("loss", "min", [combination, *baselines], comparisons, None)
    path = tmp_path / "evaluation.png"
    plot_evaluation(result, path)
    height, width = imread(str(path)).shape[:2]
    # was 2090 x 301 px (7:1): a strip nobody could read
    assert width / height <= 3.5 and width <= 1800, (width, height)
    fig = evaluation_figure(result)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[1].replace("\n", " ") == merged and all(len(line) <= LABEL_WIDTH for line in labels[1].splitlines())
    fig.canvas.draw()
    # the panels keep their width beside the long label
    assert all(ax.get_position().width > 0.12 for ax in fig.axes[:3])
