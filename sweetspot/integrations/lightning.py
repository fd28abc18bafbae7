"""``SweetspotCallback`` for PyTorch Lightning (imports lightning)."""

from modules.integrations.lightning import SweetspotCallback

__all__ = ["SweetspotCallback"]
