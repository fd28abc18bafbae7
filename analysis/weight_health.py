"""Gradient-health proxies from the weights alone, for runs without recorded gradients.

``update_ratio`` = ||w_t - w_prev|| / ||w_prev|| over a group's floating tensors (NaN at the
first checkpoint). ``dead_fraction`` = the share of output rows of the group's 2-D+ weights that
are dead: collapsed (row norm < COLLAPSE x the tensor's median row norm) or frozen (row change
since the previous checkpoint < FROZEN x the tensor's median row change while others move).
"""

from __future__ import annotations

import numpy as np
import torch

from modules.recorder import update_ratio
from modules.rundir.run_dir import RunDir

COLLAPSE = 1e-3
FROZEN = 1e-3


def _row_stats(tensor: torch.Tensor, previous: torch.Tensor | None) -> tuple[int, int]:
    rows = tensor.detach().to(torch.float64).reshape(tensor.shape[0], -1)
    norms = rows.norm(dim=1)
    dead = norms < COLLAPSE * norms.median().clamp_min(1e-300)
    if previous is not None:
        change = (rows - previous.detach().to(torch.float64).reshape(rows.shape)).norm(dim=1)
        typical = change.median()
        if typical > 0:
            dead |= change < FROZEN * typical
    return int(dead.sum()), rows.shape[0]


def weight_health(run: RunDir, groups: list[str], epochs: list[int]) -> dict[str, dict[str, np.ndarray]]:
    """group -> {"update_ratio", "dead_fraction"} over ``epochs``, each group-epoch read once."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for group in groups:
        update = np.full(len(epochs), np.nan)
        dead = np.full(len(epochs), np.nan)
        previous: dict[str, torch.Tensor] | None = None
        for index, epoch in enumerate(epochs):
            state = {k: t for k, t in run.read_group(epoch, group).items() if t.is_floating_point()}
            if previous is not None:
                update[index] = update_ratio(state, previous)
            dead_rows, all_rows = 0, 0
            for key, tensor in state.items():
                if tensor.dim() >= 2 and tensor.shape[0] > 1:
                    d, n = _row_stats(tensor, previous[key] if previous is not None else None)
                    dead_rows, all_rows = dead_rows + d, all_rows + n
            dead[index] = dead_rows / all_rows if all_rows else np.nan
            previous = state
        out[group] = {"update_ratio": update, "dead_fraction": dead}
    return out
