"""The embedded demo: a modular multi-task model, its generated data, evaluation, spec and training."""
