"""The search on Ray: checkpoint pools, the trainable, Tune + Optuna, results and reports."""
