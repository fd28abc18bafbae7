from __future__ import annotations

from analysis.plots import write_plots
from tests.analysis.test_report import small_analysis


def test_one_png_per_group_and_a_heatmap(tmp_path) -> None:
    written = write_plots(small_analysis(), tmp_path / "visualizations")
    assert sorted(p.name for p in written) == ["backbone.png", "emotion_head.png", "heatmap.png"]
    for path in written:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(p.name for p in (tmp_path / "visualizations").iterdir()) == sorted(p.name for p in written)
