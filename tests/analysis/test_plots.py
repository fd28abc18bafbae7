from __future__ import annotations

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
    import matplotlib.pyplot as plt
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
    plt.close(figure)
    heatmap = heatmap_figure(analysis)
    boxes = [p for p in heatmap.axes[0].patches if isinstance(p, Rectangle) and not p.get_fill()]
    assert len(boxes) == 2 and boxes[1].get_width() == EPOCHS.index(60) - EPOCHS.index(32) + 1
    plt.close(heatmap)
