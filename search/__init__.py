"""The search and what builds on it, one room per concern: ``scoring`` (Ray-free scoring of a
selection), ``algorithms`` (the space and the search algorithms), ``execution`` (the search on Ray
Tune + Optuna), ``calibration`` (calibrate and auto) and ``workflow`` (the pipeline)."""
