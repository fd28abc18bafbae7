"""Recording callbacks for training frameworks: ``hf`` (the Hugging Face ``Trainer``) and
``lightning`` (PyTorch Lightning). The only modules that import transformers or lightning; each
imports its framework when it is itself imported, never from ``import sweetspot``."""
