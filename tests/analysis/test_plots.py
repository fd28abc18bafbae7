from __future__ import annotations

import pytest

from analysis.errors import AnalysisWarning
from analysis.plots import write_plots
from tests.analysis._synthetic import EPOCHS
from tests.analysis.test_report import small_analysis


def test_one_png_per_group_and_a_heatmap(tmp_path) -> None:
    written = write_plots(small_analysis(), tmp_path / "visualizations")
    assert sorted(p.name for p in written) == ["backbone.png", "emotion_head.png", "heatmap.png"]
    for path in written:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(p.name for p in (tmp_path / "visualizations").iterdir()) == sorted(p.name for p in written)


def test_group_figure_marks_every_pick_on_its_own_row_and_names_an_average() -> None:
    from matplotlib.patches import Rectangle

    from analysis.plots import group_figure, heatmap_figure
    from analysis.thresholds import Thresholds

    # voting_confidence 1.0: the vote is never unanimous enough, so emotion_head averages its
    # plateau 32-60 (test_report: the step change's later level)
    analysis = small_analysis(Thresholds(voting_confidence=1.0))
    result = analysis.groups["emotion_head"]
    assert result.pick == (32, 60)
    figure = group_figure("emotion_head", result)
    axes = figure.axes[0]
    assert axes.get_title().startswith("emotion_head: average 32-60 (")
    labels = axes.get_legend_handles_labels()[1]
    assert "plateau 32-60" in labels
    for name in result.recommendations:
        assert sum(label.startswith(f"{name}: ") for label in labels) == 1, labels
    # one row per technique: the marks' heights are all different, so equal epochs stay visible
    heights = [line.get_ydata()[0] for line in axes.get_lines() if line.get_label().split(":")[0] in result.recommendations]
    assert len(set(heights)) == len(result.recommendations)
    heatmap = heatmap_figure(analysis)
    boxes = [p for p in heatmap.axes[0].patches if isinstance(p, Rectangle) and not p.get_fill()]
    assert len(boxes) == 2 and boxes[1].get_width() == EPOCHS.index(60) - EPOCHS.index(32) + 1


def test_heatmap_marks_missing_values_grey_and_hatched() -> None:
    import numpy as np
    from matplotlib.patches import Rectangle

    from analysis.pipeline import analyze_metrics
    from analysis.plots import heatmap_figure
    from tests.analysis._synthetic import frame, make_spec

    E = np.array(EPOCHS, dtype=float)
    f1 = 0.9 - ((E - 30) / 40) ** 2
    f1[[4, 5]] = np.nan  # epochs 10 and 12: skipped for 'head', so no goodness there
    spec = make_spec({"body": [("val_loss", "min")], "head": [("val_f1", "max")]})
    with pytest.warns(AnalysisWarning):
        analysis = analyze_metrics(frame(EPOCHS, {"val_loss": (E - 30) ** 2, "val_f1": f1}), EPOCHS, ["body", "head"], spec)
    figure = heatmap_figure(analysis)
    axes = figure.axes[0]
    assert "grey hatched = no value" in axes.get_title()
    hatched = [p for p in axes.patches if isinstance(p, Rectangle) and p.get_hatch()]
    assert sorted(p.get_xy() for p in hatched) == [(3.5, 0.5), (4.5, 0.5)]  # columns 4, 5 of row 1 ('head')
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].astype(float)
    height = pixels.shape[0]

    def cell_colour(column: int, row: int) -> np.ndarray:
        x, y = axes.transData.transform((column, row))
        x, y = int(round(x)), int(round(height - y))
        return pixels[y - 3 : y + 4, x - 3 : x + 4].reshape(-1, 3).mean(axis=0)

    missing = cell_colour(4, 1)
    assert missing.max() < 235, missing  # not a blank white cell
    assert missing.max() - missing.min() < 10, missing  # grey: red, green and blue alike
    present = cell_colour(4, 0)  # viridis is never grey
    assert present.max() - present.min() > 40, present
