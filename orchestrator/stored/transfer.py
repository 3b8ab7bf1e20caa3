"""``dor-bench eval --run RUN_ID --dataset D``: a recorded trial's kept prompt scored on another
dataset, recorded as its own run (in the source's experiment, linked to it by a tag; not a trial
of the benchmark, so never in its tables)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param

from orchestrator.places import sqlite_path
from orchestrator.secrets import redact
from orchestrator.tracking import EVAL_OF, TRIAL_NAME, VERSION, dor_bench_version, quiet_mlflow
from orchestrator.translate.params import params_from_spec
from workers.errors import DorBenchError, NotFoundError
from workers.outputs import PROMPT_FILE
from workers.spec import RunOptions, TrialSpec


def eval_run(
    tracking_uri: str, run_id: str, dataset: str, root: str | None, device: str
) -> tuple[str, dict[str, float]]:
    """Score the kept prompt of run ``run_id`` on ``dataset``; returns the new run's id and metrics."""
    import torch
    from mlflow.tracking import MlflowClient

    from workers.transfer import score_prompt

    quiet_mlflow()
    database = sqlite_path(tracking_uri)
    if database is not None and not database.is_file():  # MLflow would create an empty store there
        raise NotFoundError(
            f"No MLflow store at '{database}' (tracking URI {redact(tracking_uri)}).",
            "pass the --tracking-uri of the store the run is in (the benchmark file's tracking_uri).",
        )
    try:
        client = MlflowClient(tracking_uri)
        source = client.get_run(run_id)
    except Exception as err:  # MLflow says "Run ... not found" in several exception types
        raise DorBenchError(
            f"No run '{run_id}' in the store {redact(tracking_uri)} ({redact(str(err)).splitlines()[0]}).",
            "pass the run ID of a finished trial (`dor-bench ui` shows it), and the --tracking-uri it is in.",
        ) from None
    files = {a.path for a in client.list_artifacts(run_id)}
    if PROMPT_FILE not in files or "trial_spec.json" not in files:
        raise DorBenchError(
            f"Run '{run_id}' kept no prompt (no {PROMPT_FILE} artifact): it is not a trial, or was recorded "
            "before dor-bench kept what trials learn.",
            "run the trial again with this dor-bench (`dor-bench run FILE --rerun --only ...`).",
        )
    with tempfile.TemporaryDirectory(prefix="dor-bench-eval-") as tmp:
        spec = TrialSpec.model_validate_json(
            Path(client.download_artifacts(run_id, "trial_spec.json", tmp)).read_text()
        )
        state = torch.load(client.download_artifacts(run_id, PROMPT_FILE, tmp), map_location="cpu", weights_only=True)
    metrics = score_prompt(spec, state, dataset, root, RunOptions(device=device, progress=False)).metrics
    name = f"eval {source.data.tags.get(TRIAL_NAME, run_id)} on {dataset}"
    tags = {EVAL_OF: run_id, VERSION: dor_bench_version()}
    run = client.create_run(source.info.experiment_id, run_name=name, tags=tags)
    params: dict[str, Any] = {**params_from_spec(spec), "eval.dataset": dataset, "eval.root": root or ""}
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)[:6000]) for k, v in params.items()],
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id, metrics
