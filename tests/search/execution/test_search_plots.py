"""convergence.png stays readable when the baselines tie or differ by a rounding difference."""

from __future__ import annotations

import json
import math

import pandas as pd

from search.execution.results import ScoredSelection, SearchResult
from search.execution.search_plots import convergence_figure, plot_convergence, printed


def tied_result(trial_values: list[float]) -> SearchResult:
    """A search whose best single epoch and greedy soup tie (1.225824 and 1.2258241, the same when
    printed to 5 digits) and whose best trial is a rounding difference better than both."""
    trials = pd.DataFrame(
        {
            "trial_id": [f"t{i}" for i in range(len(trial_values))],
            "status": ["finished"] * len(trial_values),
            "choice/encoder": [json.dumps([i + 1]) for i in range(len(trial_values))],
            "objective": trial_values,
        }
    )
    pick = ScoredSelection({"encoder": [3]}, 1.2258239)
    baselines = {
        "best single epoch": ScoredSelection({"encoder": [3]}, 1.225824),
        "greedy soup": ScoredSelection({"encoder": [3]}, 1.2258241),
    }
    return SearchResult("val_loss", "min", trials, pick, [pick], baselines, None, 1.0, [], {}, {})


def test_tied_baselines_draw_a_readable_convergence_plot(tmp_path) -> None:
    values = [1.4, 1.2258241, 1.31, 1.2258239, 1.25]
    result = tied_result(values)
    figure = convergence_figure(result)
    ax = figure.axes[0]
    figure.canvas.draw()
    # no offset notation ("1e-7 + 1.225824") on the y axis: plain numbers only
    assert ax.yaxis.get_major_formatter().get_offset() == ""
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all("e" not in label and len(label.lstrip("−-")) <= 8 for label in labels), labels
    # every trial is inside the frame (the far-off 1.4 and 1.31 were cut off)
    low, high = ax.get_ylim()
    assert all(low < v < high for v in values)
    # a rounding difference is drawn as none: the best so far and both baselines are on one line
    lines = {line.get_gid(): line for line in ax.get_lines()}
    best = lines["best so far"].get_ydata()[-1]
    assert lines["best single epoch"].get_ydata()[0] == lines["greedy soup"].get_ydata()[0] == best == printed(1.225824)
    plot_convergence(result, tmp_path / "convergence.png")
    assert (tmp_path / "convergence.png").stat().st_size > 0


def test_all_trials_tied_still_have_a_frame_a_few_printed_digits_tall() -> None:
    figure = convergence_figure(tied_result([1.225824] * 4))
    ax = figure.axes[0]
    figure.canvas.draw()
    low, high = ax.get_ylim()
    assert low < 1.225824 < high and math.isclose(high - low, 4.64e-4, rel_tol=0.01)  # 4 steps of 1e-4, 8% padding each side
    assert ax.yaxis.get_major_formatter().get_offset() == ""
