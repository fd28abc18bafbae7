"""The demo model: a small modular multi-task network shaped like the seed's 730M model.

Parameter-name prefixes are the groups: ``backbone.``, ``heads.``, ``analyzers.``, ``dsp_kalman.``
and ``wrapper_{emotion,bentham,surd,regret}.``. Parameters grow as about 68 * width**2:
width 64 (default) ~0.3M, width 1280 ~112M (>= 100M), width 2048 ~286M (>= 250M, > 1 GB float32).
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Input features, signal length and DSP channels (fixed by the demo data).
INPUT_DIM = 24
SIGNAL_LENGTH = 32
DSP_CHANNELS = 4
FIR_TAPS = 5
TASK_SIZES = {"emotion": 6, "bentham": 1, "surd": 4, "regret": 1}


class KalmanFilter(nn.Module):
    """Per-channel scalar random-walk Kalman filter with learnable log noise variances."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.log_process_noise = nn.Parameter(torch.full((channels,), math.log(0.1)))
        self.log_measurement_noise = nn.Parameter(torch.full((channels,), math.log(1.0)))

    def forward(self, measurements: torch.Tensor) -> torch.Tensor:
        """Filter ``(batch, channels, time)`` measurements; returns the state estimates."""
        q = self.log_process_noise.exp()
        r = self.log_measurement_noise.exp()
        estimate = measurements[:, :, 0]
        variance = r.expand_as(estimate[0])
        outputs = [estimate]
        for t in range(1, measurements.shape[-1]):
            prior_variance = variance + q
            gain = prior_variance / (prior_variance + r)
            estimate = estimate + gain * (measurements[:, :, t] - estimate)
            variance = (1 - gain) * prior_variance
            outputs.append(estimate)
        return torch.stack(outputs, dim=-1)


class DspKalman(nn.Module):
    """Learnable FIR filter bank (conv1d) on the 1-D signal, a Kalman filter, then a projection."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.fir = nn.Conv1d(1, DSP_CHANNELS, FIR_TAPS, padding=FIR_TAPS // 2)
        self.kalman = KalmanFilter(DSP_CHANNELS)
        self.proj = nn.Linear(2 * DSP_CHANNELS * SIGNAL_LENGTH, out_dim)
        self.act = nn.ReLU()

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        filtered = self.fir(signal.unsqueeze(1))
        smoothed = self.kalman(filtered)
        features = torch.cat([smoothed, filtered.abs()], dim=1).flatten(1)
        return self.act(self.proj(features))


def _mlp_head(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class ResidualAdapter(nn.Module):
    """``y + up(relu(down(y)))``: a small adapter on one task's output."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.act = nn.ReLU()
        self.up = nn.Linear(hidden, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.up(self.act(self.down(y)))


class DemoModel(nn.Module):
    """Backbone + DSP/Kalman + analyzers feeding four task heads, each behind a residual wrapper."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        hidden, feature = 4 * width, 2 * width
        self.width = width
        self.backbone = nn.Sequential(
            nn.Linear(INPUT_DIM, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, feature),
            nn.ReLU(),
        )
        self.dsp_kalman = DspKalman(width)
        self.analyzers = nn.Sequential(
            nn.Linear(feature + width, hidden),
            nn.GELU(),
            nn.Linear(hidden, feature),
            nn.GELU(),
        )
        self.heads = nn.ModuleDict(
            {
                "emotion": _mlp_head(feature, feature, TASK_SIZES["emotion"]),
                "bentham": _mlp_head(feature, feature, TASK_SIZES["bentham"]),
                "surd": _mlp_head(2 * feature, feature, TASK_SIZES["surd"]),
                "regret": _mlp_head(2 * feature, feature, TASK_SIZES["regret"]),
            }
        )
        adapter_hidden = max(8, width // 4)
        self.wrapper_emotion = ResidualAdapter(TASK_SIZES["emotion"], adapter_hidden)
        self.wrapper_bentham = ResidualAdapter(TASK_SIZES["bentham"], adapter_hidden)
        self.wrapper_surd = ResidualAdapter(TASK_SIZES["surd"], adapter_hidden)
        self.wrapper_regret = ResidualAdapter(TASK_SIZES["regret"], adapter_hidden)

    def forward(self, x: torch.Tensor, signal: torch.Tensor) -> dict[str, torch.Tensor]:
        """Task outputs: emotion logits (B, 6), bentham (B,), surd logits (B, 4), regret logit (B,)."""
        shared = self.backbone(x)
        dsp = self.dsp_kalman(signal)
        analysed = self.analyzers(torch.cat([shared, dsp], dim=1))
        joint = torch.cat([shared, analysed], dim=1)
        return {
            "emotion": self.wrapper_emotion(self.heads["emotion"](shared)),
            "bentham": self.wrapper_bentham(self.heads["bentham"](shared)).squeeze(1),
            "surd": self.wrapper_surd(self.heads["surd"](joint)),
            "regret": self.wrapper_regret(self.heads["regret"](joint)).squeeze(1),
        }


def build_model(width: int = 64, seed: int = 0) -> DemoModel:
    """The demo model with weights initialised deterministically from ``seed``."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        from modules.errors import SpecError

        raise SpecError(f"model_args width must be a positive integer, got {width!r}")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return DemoModel(width)
    finally:
        torch.random.set_rng_state(generator_state)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
