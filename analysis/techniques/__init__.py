"""The five sweet-spot techniques, registered by name in the order the pipeline runs them."""

from __future__ import annotations

import importlib

from analysis.techniques.base import (
    TECHNIQUES,
    GroupContext,
    Recommendation,
    Technique,
    get_technique,
    register,
)

#: Built-in techniques, imported (and so registered) in this order; the ensemble votes last.
BUILTIN = ("plateau", "task_metrics", "mcda", "gradient_health", "ensemble")
for _name in BUILTIN:
    importlib.import_module(f"analysis.techniques.{_name}")

__all__ = ["BUILTIN", "TECHNIQUES", "GroupContext", "Recommendation", "Technique", "get_technique", "register"]
