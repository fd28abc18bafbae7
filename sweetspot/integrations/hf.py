"""``SweetspotCallback`` for the Hugging Face ``Trainer`` (imports transformers)."""

from modules.integrations.hf import SweetspotCallback

__all__ = ["SweetspotCallback"]
