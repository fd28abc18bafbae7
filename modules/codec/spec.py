"""The codec's ``sweetspot.yaml``: three groups and the metrics that judge each."""

from __future__ import annotations

from typing import Any

from modules.spec.schema import Spec, dump_spec, parse_spec

GROUPS = ["encoder", "classifier", "decoder"]


def codec_spec_dict(width: int = 64, seed: int = 0) -> dict[str, Any]:
    return {
        "name": "codec",
        "model": "modules.codec.model:build_model",
        "model_args": {"width": width, "seed": seed},
        "data": "modules.codec.data:load_splits",
        "evaluate": "modules.codec.evaluate:evaluate",
        "objective": {"metric": "loss", "mode": "min"},
        "groups": {group: [f"{group}."] for group in GROUPS},
        "group_metrics": {
            "encoder": [{"metric": "val_loss", "mode": "min"}],
            "classifier": [{"metric": "val_ce", "mode": "min"}, {"metric": "val_accuracy", "mode": "max"}],
            "decoder": [{"metric": "val_reconstruction", "mode": "min"}],
        },
    }


def codec_spec(width: int = 64, seed: int = 0) -> Spec:
    return parse_spec(codec_spec_dict(width, seed), "codec spec")


def codec_spec_yaml(width: int = 64, seed: int = 0) -> str:
    return dump_spec(codec_spec(width, seed))
