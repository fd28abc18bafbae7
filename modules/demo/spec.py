"""The demo's ``sweetspot.yaml``: 8 groups, couplings A/B/C as in the seed, judging metrics."""

from __future__ import annotations

from typing import Any

from modules.spec.schema import Spec, dump_spec, parse_spec

GROUPS = [
    "backbone",
    "heads",
    "analyzers",
    "dsp_kalman",
    "wrapper_emotion",
    "wrapper_bentham",
    "wrapper_surd",
    "wrapper_regret",
]

GROUP_METRICS: dict[str, list[tuple[str, str]]] = {
    "backbone": [("val_loss", "min")],
    "heads": [
        ("val_emotion_f1", "max"),
        ("val_bentham_rmse", "min"),
        ("val_surd_accuracy", "max"),
        ("val_regret_cf_accuracy", "max"),
    ],
    "analyzers": [("val_surd_accuracy", "max"), ("val_surd_mi", "max"), ("val_regret_cf_accuracy", "max")],
    "dsp_kalman": [("val_surd_accuracy", "max"), ("val_loss", "min")],
    "wrapper_emotion": [("val_emotion_f1", "max"), ("val_emotion_confusion_stability", "max")],
    "wrapper_bentham": [("val_bentham_rmse", "min"), ("val_bentham_corr", "max")],
    "wrapper_surd": [("val_surd_accuracy", "max"), ("val_surd_mi", "max")],
    "wrapper_regret": [("val_regret_cf_accuracy", "max")],
}


def demo_spec_dict(width: int = 64, seed: int = 0) -> dict[str, Any]:
    """The demo spec as a plain mapping (what ``sweetspot.yaml`` holds)."""
    return {
        "name": "demo",
        "model": "modules.demo.model:build_model",
        "model_args": {"width": width, "seed": seed},
        "data": "modules.demo.data:load_splits",
        "data_args": {"seed": seed},
        "evaluate": "modules.demo.evaluate:evaluate",
        "batches": "modules.demo.data:batches",
        "objective": {"metric": "loss", "mode": "min"},
        "groups": {group: [f"{group}."] for group in GROUPS},
        "couplings": [
            {"name": "A", "groups": ["backbone", "heads"], "max_epoch_gap": 0},
            {"name": "B", "groups": ["analyzers"], "max_epoch_gap": 0},
            {"name": "C", "groups": ["dsp_kalman"], "max_epoch_gap": 0},
        ],
        "group_metrics": {
            group: [{"metric": metric, "mode": mode} for metric, mode in metrics]
            for group, metrics in GROUP_METRICS.items()
        },
    }


def demo_spec(width: int = 64, seed: int = 0) -> Spec:
    """The validated demo spec."""
    return parse_spec(demo_spec_dict(width, seed), "demo spec")


def demo_spec_yaml(width: int = 64, seed: int = 0) -> str:
    """The demo spec as YAML text."""
    return dump_spec(demo_spec(width, seed))
