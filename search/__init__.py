"""Everything on Ray: the checkpoint pool, the trial scorer, the Tune + Optuna search."""
