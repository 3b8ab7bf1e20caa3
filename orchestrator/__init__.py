#: Where ``run`` records trials unless the benchmark file says otherwise (``report``/``ui`` read it).
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

#: The environment variable MLflow itself reads for the store (after the flag and the file).
TRACKING_ENV = "MLFLOW_TRACKING_URI"

#: The largest grid planned unless asked (``--max-trials``): the paper's grid is 297 trials, and
#: a grid of 10^5 is a list longer than meant far more often than a plan.
MAX_TRIALS = 10_000
