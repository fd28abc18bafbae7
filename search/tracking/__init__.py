"""Where a search's results are also sent: an MLflow tracking store, an Optuna storage.

Both are optional (the ``[tracking]`` extra); mlflow is imported only when ``--mlflow`` is given.
"""
