#: Where ``run`` records trials unless the benchmark file says otherwise (``report``/``ui`` read it).
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
