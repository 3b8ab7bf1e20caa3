"""MLflow as the system of record: one experiment per benchmark, a parent run per
``dor-bench run``, one child run per trial. Only the driver writes (never the workers), so a
local sqlite store is never written by two processes at once."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import matplotlib.pyplot as plt
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from orchestrator.report.plots import reliability_figure
from orchestrator.secrets import redact
from orchestrator.translate.params import params_from_spec
from workers.errors import DorBenchError
from workers.spec import TrialResult, TrialSpec

# The tag vocabulary of every dor-bench run, defined once.
RUN_KEY = "dor_bench.run_key"
TRIAL_NAME = "dor_bench.trial"
PARENT = "mlflow.parentRunId"
SWEEP = "dor_bench.sweep"
SWEEP_STORAGE = "dor_bench.sweep_storage"
OBJECTIVE = "dor_bench.objective"
TUNE_TRIAL = "dor_bench.tune_trial"
TRIAL_STATUS = "dor_bench.sweep_status"  # completed | early-stopped | errored
LEAKY = "dor_bench.leaky"
VERSION = "dor_bench.version"
GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own: its UI shows it
EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow 3 opens a model-training experiment on its runs
ATTEMPTS = "dor_bench.attempts"
ERROR = "dor_bench.error"
BENCHMARK_FILE = "dor_bench.benchmark_file"
SWEEP_FILE = "dor_bench.sweep_file"
BEST_TRIAL = "dor_bench.best_trial"
EVAL_OF = "dor_bench.eval_of"  # an eval run: the trial run whose prompt it scored
RESCORED = "dor_bench.rescored"  # the settings a run was rescored with (bins15,bins20)


def search_all(client: MlflowClient, experiment_id: str, query: str) -> list:
    """Every run of the experiment that ``query`` matches, paged 1000 at a time (the one paging
    loop: a store with more runs than a page must never look smaller than it is)."""
    runs: list = []
    token = None
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


def dor_bench_version() -> str:
    try:
        return version("dor-bench")
    except PackageNotFoundError:
        return "unknown"


def git_commit() -> str | None:
    """The commit of the dor-bench checkout, when it is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a local sqlite store (``sqlite:///mlflow.db``: relative to the current
    folder), else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).expanduser().absolute()


def file_store_path(tracking_uri: str) -> Path | None:
    """The folder of a local file store (``file:///abs/mlruns``, ``file:mlruns`` or a plain path),
    else None (a server, a database, any other scheme)."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(url2pathname(parsed.path)).expanduser().absolute()
    if parsed.scheme == "" and tracking_uri != "databricks":  # MLflow's one scheme-less store name
        return Path(tracking_uri).expanduser().absolute()
    return None


def artifact_location(tracking_uri: str) -> str | None:
    """For a local sqlite store, its artifacts go in ``mlruns/`` beside the database file (MLflow
    would put them under the current folder, so a run from another folder would scatter them)."""
    database = sqlite_path(tracking_uri)
    if database is None:
        return None  # a server or other store chooses its own
    return (database.parent / "mlruns").as_uri()


def quiet_mlflow() -> None:
    """MLflow prints "View run at <tracking URI>..." for every run it ends (the URI with its
    credentials, a line per trial) and a progress bar per artifact it downloads; dor-bench prints
    its own progress instead."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"


class Tracker:
    """Writes trial records into one MLflow experiment."""

    def __init__(self, tracking_uri: str, experiment: str):
        quiet_mlflow()
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        try:
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (
                found.experiment_id
                if found is not None
                else self.client.create_experiment(experiment, artifact_location=artifact_location(tracking_uri))
            )
            if found is None or EXPERIMENT_KIND not in found.tags:
                self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND, "custom_model_development")
        except Exception as err:  # the store itself is unusable: say which and how to fix
            raise DorBenchError(
                f"Cannot open the MLflow tracking store '{redact(tracking_uri)}': {redact(str(err))}",
                "check that the path is writable (a sqlite file like sqlite:///mlflow.db is "
                "created in the current folder) or that the server at --tracking-uri is up.",
            ) from None

    def start_parent(self, name: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={
                VERSION: dor_bench_version(),
                **({GIT_COMMIT: c} if (c := git_commit()) else {}),
                **tags,
            },
        )
        return run.info.run_id

    def log_files(self, run_id: str, texts: dict[str, str], folder: Path | None = None) -> None:
        """What a reader needs to reproduce a parent run: ``texts`` (file -> text) and the files
        of the report ``folder`` (under ``report/``), as its artifacts."""
        for file, text in texts.items():
            self.client.log_text(run_id, redact(text), file)
        if folder is not None and folder.is_dir():
            self.client.log_artifacts(run_id, str(folder), "report")

    def end_parent(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    def runs_by_key(self, keys: set[str] | None = None) -> dict[str, list]:
        """Child runs of this experiment with a run key, grouped by key (all statuses)."""
        out: dict[str, list] = {}
        for run in search_all(self.client, self.experiment_id, f"tags.`{RUN_KEY}` != ''"):
            key = run.data.tags[RUN_KEY]  # the query asks for runs that have it
            if keys is None or key in keys:
                out.setdefault(key, []).append(run)
        return out

    def finished_keys(self, keys: set[str]) -> set[str]:
        return {k for k, runs in self.runs_by_key(keys).items() if any(r.info.status == "FINISHED" for r in runs)}

    def close_stale(self, keys: set[str]) -> int:
        """Mark runs left RUNNING by an interrupted driver as KILLED; returns how many."""
        stale = [r for runs in self.runs_by_key(keys).values() for r in runs if r.info.status == "RUNNING"]
        for run in stale:
            self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        return len(stale)

    def find_parent(self, tag: str, value: str) -> str | None:
        """The newest parent run (no parent of its own) with ``tag`` = ``value``, if any."""
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.`{tag}` = '{value}'", order_by=["attributes.start_time DESC"], max_results=50
        )
        parents = [r for r in runs if PARENT not in r.data.tags]
        return parents[0].info.run_id if parents else None

    def reopen(self, run_id: str) -> None:
        """Mark a parent run RUNNING again (a resumed sweep)."""
        self.client.update_run(run_id, status="RUNNING")

    def children(self, parent_id: str) -> list:
        """Every child run of ``parent_id`` (all statuses)."""
        return search_all(self.client, self.experiment_id, f"tags.`{PARENT}` = '{parent_id}'")

    def record(
        self,
        parent_id: str,
        name: str,
        spec: TrialSpec,
        result: TrialResult | None,
        error: str | None = None,
        attempts: int = 1,
    ) -> str:
        """A benchmark trial as a whole child run (see ``trial_start`` and ``trial_end``)."""
        runs = LiveRuns(self, parent_id)
        runs.start(name, name, *trial_start(name, spec, attempts))
        return runs.end(name, trial_end(name, spec, result, error))


@dataclass
class Ending:
    """What closes a child run: its status and final metrics, the per-epoch rows (step = row
    number, 1-based), artifacts (file -> JSON data), texts, figures and tags known only at the end."""

    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # logged as they are (the learned prompt, outputs)


class LiveRuns:
    """The one writer of child runs, live: a run exists from the moment its trial starts
    (RUNNING, with its tags and params), takes each epoch's row as it arrives (``epoch/<key>`` at
    step = epoch, with the time it arrived) and ends with the final metrics, the rows it has not
    seen yet and the artifacts. A trial that starts again (a retry after its worker died)
    continues its run. ``trial`` is the caller's name for a trial (a run key, a Tune trial id)."""

    def __init__(self, tracker: Tracker, parent_id: str):
        self.tracker, self.client, self.parent_id = tracker, tracker.client, parent_id
        self.runs: dict[str, str] = {}
        self.steps: dict[str, set[int]] = {}

    def start(
        self, trial: str, name: str, tags: dict[str, str], params: dict[str, str], dataset: DatasetInput | None = None
    ) -> str:
        """The trial's run: created RUNNING the first time (with the ``dataset`` it trains on as
        its MLflow input), RUNNING again (tags updated) after."""
        if trial in self.runs:
            run_id = self.runs[trial]
            self.client.update_run(run_id, status="RUNNING")
            for key, value in tags.items():
                self.client.set_tag(run_id, key, value)
            return run_id
        run = self.client.create_run(self.tracker.experiment_id, run_name=name, tags={PARENT: self.parent_id, **tags})
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
        if dataset is not None:
            self.client.log_inputs(run_id, datasets=[dataset])
        self.runs[trial], self.steps[trial] = run_id, set()
        return run_id

    def adopt(self, trial: str, run_id: str, steps: set[int]) -> None:
        """Continue a run an earlier driver opened (its logged ``steps`` are not logged again)."""
        self.runs[trial], self.steps[trial] = run_id, set(steps)

    def epoch(self, trial: str, step: int, row: dict[str, float]) -> None:
        """One epoch's row, now."""
        now = int(time.time() * 1000)
        metrics = [Metric(f"epoch/{k}", float(v), now, step) for k, v in row.items()]
        self.client.log_batch(self.runs[trial], metrics=metrics)
        self.steps[trial].add(step)

    def end(self, trial: str, ending: Ending) -> str:
        """Close the trial's run: ``ending``'s tags, metrics, the history rows not yet logged and
        the files; its status is set only after everything is written (figures are closed)."""
        run_id, seen = self.runs.pop(trial), self.steps.pop(trial)
        for key, value in ending.tags.items():
            self.client.set_tag(run_id, key, value)
        now = int(time.time() * 1000)
        rows = [Metric(k, float(v), now, 0) for k, v in ending.metrics.items()]
        for step, row in enumerate(ending.history, start=1):
            if step not in seen:
                rows += [Metric(f"epoch/{k}", float(v), now, step) for k, v in row.items()]
        for start in range(0, len(rows), 1000):
            self.client.log_batch(run_id, metrics=rows[start : start + 1000])
        for file, data in ending.artifacts.items():
            self.client.log_dict(run_id, data, file)
        for file, text in ending.texts.items():
            self.client.log_text(run_id, text, file)
        for file, fig in ending.figures.items():
            self.client.log_figure(run_id, fig, file)
            plt.close(fig)
        for path in ending.files:
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, ending.status)
        return run_id

    def abandon(self) -> None:
        """Mark every run still open KILLED (the driver is stopping)."""
        for trial in list(self.runs):
            self.client.set_terminated(self.runs.pop(trial), RunStatus.to_string(RunStatus.KILLED))
            self.steps.pop(trial, None)


def trial_start(name: str, spec: TrialSpec, attempts: int) -> tuple[dict[str, str], dict[str, str], DatasetInput]:
    """A benchmark trial's tags, params and dataset input, known before it runs."""
    tags = {RUN_KEY: spec.key(), TRIAL_NAME: name, VERSION: dor_bench_version(), ATTEMPTS: str(attempts)}
    return tags, params_from_spec(spec), dataset_input(spec)


def dataset_input(spec: TrialSpec) -> DatasetInput:
    """The trial's training data as an MLflow dataset input (the runs table's Dataset column):
    the dataset, where it is read from, and a digest of what decides its few-shot draw."""
    draw = {
        "dataset": spec.dataset,
        "root": spec.root,
        "shots": spec.shots,
        "seed": spec.seed,
        "subsample": spec.subsample,
    }
    digest = hashlib.sha256(json.dumps(draw, sort_keys=True).encode()).hexdigest()[:16]
    profile = json.dumps({k: draw[k] for k in ("shots", "seed", "subsample")})
    source = redact(spec.root) if spec.root else "built-in (generated by dor-bench)"
    dataset = Dataset(spec.dataset, digest, "local" if spec.root else "dor-bench", source, profile=profile)
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "train")])


def trial_end(name: str, spec: TrialSpec, result: TrialResult | None, error: str | None) -> Ending:
    """What ends a benchmark trial's run: FINISHED with its metrics, per-epoch history, per-class
    stats, result and reliability diagram, or FAILED with its error (as text and as a tag)."""
    artifacts: dict[str, Any] = {"trial_spec.json": spec.canonical_dict()}
    if result is None:
        return Ending(
            "FAILED",
            artifacts=artifacts,
            texts={"error.txt": error or ""},
            tags={ERROR: (error or "unknown error")[:5000]},
        )
    artifacts["per_class.json"] = {"per_class": [c.model_dump() for c in result.per_class], "info": result.info}
    artifacts["result.json"] = result.model_dump(mode="json")
    kept = Path(result.info["kept"]) if "kept" in result.info else None
    return Ending(
        "FINISHED",
        result.metrics,
        [epoch_row(row) for row in result.history],
        artifacts,
        figures={"reliability.png": reliability_figure(result.reliability, name)} if result.reliability else {},
        files=sorted(kept.iterdir()) if kept is not None and kept.is_dir() else [],
    )


def epoch_row(row: dict[str, float]) -> dict[str, float]:
    """A benchmark trial's epoch row as metrics: the epoch is the step, not a metric."""
    return {k: v for k, v in row.items() if k != "epoch"}
