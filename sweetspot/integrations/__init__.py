"""Recording callbacks for training frameworks: ``sweetspot.integrations.hf`` (the Hugging Face
``Trainer``) and ``sweetspot.integrations.lightning``. Each imports its framework only when imported."""
