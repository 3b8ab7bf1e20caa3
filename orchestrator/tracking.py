"""MLflow as the system of record: one experiment per benchmark, a parent run per
``dor-bench run``, one child run per trial. Only the driver writes (never the workers), so a
local sqlite store is never written by two processes at once. The child runs' writes go through
an ``Outbox``: the driver never waits on the store, and a store that is down for a while (a
server restarting) loses nothing."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TextIO

import requests
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.console import log
from orchestrator.places import sqlite_path
from orchestrator.report.plots import reliability_png
from orchestrator.secrets import redact
from orchestrator.server import STORE_TIMEOUT_ENV, STORE_TIMEOUT_S
from orchestrator.translate.params import params_from_spec
from workers.errors import DorBenchError
from workers.spec import TrialResult, TrialSpec

# The tag vocabulary of every dor-bench run, defined once.
RUN_KEY = "dor_bench.run_key"
TRIAL_NAME = "dor_bench.trial"
PARENT = "mlflow.parentRunId"
#: A row every training epoch of a benchmark trial logs (as ``epoch/<it>``).
LOGGED_EVERY_EPOCH = "train/loss"
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
NODE = "dor_bench.node"  # where a trial ran last: "<ip> <Ray node id>"
ERROR = "dor_bench.error"
BENCHMARK_FILE = "dor_bench.benchmark_file"
SWEEP_FILE = "dor_bench.sweep_file"
BEST_TRIAL = "dor_bench.best_trial"
EVAL_OF = "dor_bench.eval_of"  # an eval run: the trial run whose prompt it scored
RESCORED = "dor_bench.rescored"  # the settings a run was rescored with (bins15,bins20)
WRITE_REF = "dor_bench.write_ref"  # the driver's own id of a child run: a replayed journal finds it
DEVICE_NAME = "dor_bench.device_name"  # what a trial ran on: the device its cost was measured on

# A trial's cost, recorded as metrics named as in its info (workers/trial.py): its training's
# seconds, the epochs trained in that run (a resumed trial trained only those after its
# checkpoint) and its peak memory (MB).
TRAIN_SECONDS, TRAIN_EPOCHS, PEAK_MEMORY_MB = "train_seconds", "train_epochs_run", "peak_memory_mb"
COST_METRICS = (TRAIN_SECONDS, TRAIN_EPOCHS, PEAK_MEMORY_MB)

#: Where each parent run's writes wait for the store: a folder per parent run and driver, holding
#: the journal (``writes.jsonl``), the files it uploads (``files/``) and a lock its driver holds
#: while it lives; gone once all is written.
OUTBOX = Path(".dor-bench") / "outbox"
JOURNAL, LOCK = "writes.jsonl", "lock"


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


def short_http_retries() -> None:
    """One MLflow request gives up after two quick retries and a minute without an answer
    (MLflow's defaults, seven retries with a doubling backoff and two minutes, wait about four
    minutes per call): the ``Outbox`` rides an outage out, keeping the writes and retrying them
    while the trials go on. Variables the user set are kept."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


def store_timeout() -> float:
    """``--store-timeout`` (through ``$DOR_BENCH_STORE_TIMEOUT``), else the default."""
    text = os.environ.get(STORE_TIMEOUT_ENV)
    if text is None:
        return STORE_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise DorBenchError(
            f"${STORE_TIMEOUT_ENV} (--store-timeout) must be a number of seconds above 0, not {text!r}.",
            f"set it to e.g. {STORE_TIMEOUT_S:.0f}, or unset it.",
        )
    return seconds


class Tracker:
    """Writes trial records into one MLflow experiment. Child runs are written through an
    ``Outbox`` per parent run; every read waits for this tracker's writes first, so it sees them."""

    def __init__(self, tracking_uri: str, experiment: str, outbox: Path = OUTBOX):
        quiet_mlflow()
        short_http_retries()
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.timeout, self.outbox_root = store_timeout(), outbox.expanduser().absolute()
        self.outboxes: dict[str, Outbox] = {}
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
        """End a parent run after its children's writes (in their journal too, should the store
        be out of reach: then this raises why)."""
        box = self.outboxes.get(run_id)
        if box is None:
            self.client.set_terminated(run_id, status)
            return
        box.put(
            {"op": "bind", "ref": run_id, "run_id": run_id},
            {"op": "end", "ref": run_id, "status": status, "time": now_ms()},
        )
        box.drain()

    def outbox(self, parent_id: str) -> Outbox:
        """The outbox of ``parent_id``'s child runs (one per parent run and tracker)."""
        if parent_id not in self.outboxes:
            self.recover()
            folder = self.outbox_root / f"{parent_id}-{uuid.uuid4().hex[:8]}"
            self.outboxes[parent_id] = Outbox(self.client, self.uri, folder, self.timeout)
        return self.outboxes[parent_id]

    def recover(self) -> None:
        """Write into the store the journals that stopped drivers left for it in the outbox (no
        live driver holds their lock), so that what they computed counts, and remove them."""
        for journal in sorted(self.outbox_root.glob(f"*/{JOURNAL}")):
            with unlocked(journal.parent / LOCK) as free:
                if not free or read_journal(journal)[0]["tracking_uri"] != redact(self.uri, None):
                    continue
                made, runs, _ = replay(journal, self.uri)
                shutil.rmtree(journal.parent)
            log(f"[dor-bench] {made} writes ({runs} runs) a stopped driver left in {journal} are now in the store")

    def flush(self) -> None:
        """Wait until every write of this tracker's child runs is in the store."""
        for box in list(self.outboxes.values()):
            box.drain()

    def runs_by_key(self, keys: set[str] | None = None) -> dict[str, list]:
        """Child runs of this experiment with a run key, grouped by key (all statuses)."""
        self.flush()
        out: dict[str, list] = {}
        for run in search_all(self.client, self.experiment_id, f"tags.`{RUN_KEY}` != ''"):
            key = run.data.tags[RUN_KEY]  # the query asks for runs that have it
            if keys is None or key in keys:
                out.setdefault(key, []).append(run)
        return out

    def finished_keys(self, keys: set[str]) -> set[str]:
        return {k for k, runs in self.runs_by_key(keys).items() if any(r.info.status == "FINISHED" for r in runs)}

    def close_stale(self, keys: set[str]) -> int:
        """Mark runs left RUNNING by an interrupted driver as KILLED (after writing what it left in
        the outbox); returns how many."""
        self.recover()
        stale = [r for runs in self.runs_by_key(keys).values() for r in runs if r.info.status == "RUNNING"]
        for run in stale:
            self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        return len(stale)

    def interrupted(self, keys: set[str]) -> dict[str, tuple[str, set[int]]]:
        """Per run key, the newest KILLED run (an interrupted driver's) and the epochs it logged."""
        out = {}
        for key, runs in self.runs_by_key(keys).items():
            killed = [r for r in runs if r.info.status == "KILLED"]
            if killed:
                run_id = max(killed, key=lambda r: r.info.start_time).info.run_id
                logged = self.client.get_metric_history(run_id, f"epoch/{LOGGED_EVERY_EPOCH}")
                out[key] = (run_id, {m.step for m in logged})
        return out

    def find_parent(self, tag: str, value: str) -> str | None:
        """The newest parent run (no parent of its own) with ``tag`` = ``value``, if any."""
        self.flush()
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
        self.flush()
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
        """A benchmark trial as a whole child run (see ``trial_start`` and ``trial_end``); its id."""
        runs = LiveRuns(self, parent_id)
        runs.start(name, name, *trial_start(name, spec, attempts))
        ref = runs.end(name, trial_end(name, spec, result, error))
        runs.outbox.drain()
        return runs.outbox.ids[ref]


@dataclass
class Ending:
    """What closes a child run: its status and final metrics, the per-epoch rows (step = row
    number, 1-based), artifacts (file -> JSON data), texts, figures and tags known only at the end."""

    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)  # PNG files
    tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # the kept files (``trial_files``)


class LiveRuns:
    """The one writer of child runs, live: a run exists from the moment its trial starts
    (RUNNING, with its tags and params), takes each epoch's row as it arrives (``epoch/<key>`` at
    step = epoch, with the time it arrived) and ends with the final metrics, the rows it has not
    seen yet and the artifacts. A trial that starts again (a retry after its worker died)
    continues its run. ``trial`` is the caller's name for a trial (a run key, a Tune trial id).
    Writes are queued in the parent run's ``Outbox`` (calls return at once; ``trouble`` says
    when the store does not answer); a run is known by its ref until the store gives it an id."""

    def __init__(self, tracker: Tracker, parent_id: str):
        self.tracker, self.parent_id = tracker, parent_id
        self.outbox = tracker.outbox(parent_id)
        self.runs: dict[str, str] = {}  # trial -> its run's ref
        self.steps: dict[str, set[int]] = {}

    def start(
        self, trial: str, name: str, tags: dict[str, str], params: dict[str, str], dataset: DatasetInput | None = None
    ) -> None:
        """The trial's run: created RUNNING the first time (with the ``dataset`` it trains on as
        its MLflow input), RUNNING again (tags updated, under this parent) after or once adopted."""
        if trial in self.runs:
            ref = self.runs[trial]
            tags = {PARENT: self.parent_id, **tags}
            self.outbox.put({"op": "status", "ref": ref, "status": "RUNNING"}, {"op": "tags", "ref": ref, "tags": tags})
            return
        ref = uuid.uuid4().hex
        self.outbox.put(
            {
                "op": "create",
                "ref": ref,
                "experiment": self.tracker.experiment_id,
                "name": name,
                "time": now_ms(),
                "tags": {PARENT: self.parent_id, **tags},
                "params": {k: v[:6000] for k, v in params.items()},
                "dataset": dataset_json(dataset),
            }
        )
        self.runs[trial], self.steps[trial] = ref, set()

    def adopt(self, trial: str, run_id: str, steps: set[int]) -> None:
        """Continue a run an earlier driver opened (its logged ``steps`` are not logged again)."""
        ref = uuid.uuid4().hex
        self.outbox.put({"op": "bind", "ref": ref, "run_id": run_id})
        self.runs[trial], self.steps[trial] = ref, set(steps)

    def epoch(self, trial: str, step: int, row: dict[str, float]) -> None:
        """One epoch's row, now."""
        now = now_ms()
        self.outbox.put(
            {
                "op": "metrics",
                "ref": self.runs[trial],
                "metrics": [[f"epoch/{k}", float(v), now, step] for k, v in row.items()],
            }
        )
        self.steps[trial].add(step)

    def end(self, trial: str, ending: Ending) -> str:
        """Close the trial's run: ``ending``'s tags, metrics, the history rows not yet logged and
        the files (copied into the outbox now: the caller may delete its own); its status is set
        only after everything is written. Returns the run's ref."""
        ref, seen = self.runs.pop(trial), self.steps.pop(trial)
        writes: list[Write] = [{"op": "tags", "ref": ref, "tags": ending.tags}] if ending.tags else []
        now = now_ms()
        rows = [[k, float(v), now, 0] for k, v in ending.metrics.items()]
        for step, row in enumerate(ending.history, start=1):
            if step not in seen:
                rows += [[f"epoch/{k}", float(v), now, step] for k, v in row.items()]
        if rows:
            writes.append({"op": "metrics", "ref": ref, "metrics": rows})
        stage = self.outbox.stage
        for file, data in ending.artifacts.items():
            writes.append(
                stage(ref, file, lambda path, data=data: path.write_text(json.dumps(data, indent=2, default=str)))
            )
        for file, text in ending.texts.items():
            writes.append(stage(ref, file, lambda path, text=text: path.write_text(text)))
        for file, png in ending.figures.items():
            writes.append(stage(ref, file, lambda path, png=png: path.write_bytes(png)))
        for file, data in ending.files.items():
            writes.append(stage(ref, file, lambda path, data=data: path.write_bytes(data)))
        self.outbox.put(*writes, {"op": "end", "ref": ref, "status": ending.status, "time": now_ms()})
        return ref

    def abandon(self) -> None:
        """Mark every run still open KILLED (the driver is stopping) and wait for the writes. A
        store still out of reach is reported by the parent's end (``Tracker.end_parent``), which
        goes into the journal too."""
        ends = [{"op": "end", "ref": ref, "status": "KILLED", "time": now_ms()} for ref in self.runs.values()]
        self.runs.clear()
        self.steps.clear()
        with contextlib.suppress(DorBenchError):  # journaled all the same
            self.outbox.put(*ends)
            self.outbox.drain()

    def trouble(self) -> str | None:
        """What the store's trouble is now, for the progress line, or None."""
        return self.outbox.trouble()


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


def trial_end(
    name: str,
    spec: TrialSpec,
    result: TrialResult | None,
    error: str | None,
    figures: dict[str, bytes] | None = None,
    files: dict[str, bytes] | None = None,
) -> Ending:
    """What ends a benchmark trial's run: FINISHED with its metrics, its cost (``COST_METRICS``
    and the ``DEVICE_NAME`` tag), per-epoch history, per-class stats, result, reliability
    diagram (``figures``, drawn by the worker; drawn here when not given) and kept files
    (``files``, read by the worker; read here when not given: a trial run in this process), or
    FAILED with its error (as text and as a tag)."""
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
    cost = {name: float(result.info[name]) for name in COST_METRICS if name in result.info}
    return Ending(
        "FINISHED",
        {**result.metrics, **cost},
        [epoch_row(row) for row in result.history],
        artifacts,
        figures=trial_figures(name, result) if figures is None else figures,
        tags={DEVICE_NAME: str(result.info["device_name"])} if "device_name" in result.info else {},
        files=trial_files(result) if files is None else files,
    )


def trial_figures(name: str, result: TrialResult) -> dict[str, bytes]:
    """A finished trial's figure files: its reliability diagram (none without test scores)."""
    return {"reliability.png": reliability_png(result.reliability, name)} if result.reliability else {}


def trial_files(result: TrialResult, take: bool = False) -> dict[str, bytes]:
    """A finished trial's kept files (its learned prompt and per-sample outputs, which it wrote into
    the folder ``result.info["kept"]`` names) as {file name: bytes}, the form in which they travel
    with its result: the driver may not reach the disk of the node the trial ran on. ``take``: the
    folder goes once read (the bytes are then the only copy), and the result no longer names it."""
    folder = Path(result.info["kept"]) if "kept" in result.info else None
    if folder is None or not folder.is_dir():
        return {}
    files = {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}
    if take:
        shutil.rmtree(folder, ignore_errors=True)
        del result.info["kept"]
    return files


def epoch_row(row: dict[str, float]) -> dict[str, float]:
    """A benchmark trial's epoch row as metrics: the epoch is the step, not a metric."""
    return {k: v for k, v in row.items() if k != "epoch"}


# --------------------------------------------------------------------------- the outbox

Write = dict[str, Any]


def now_ms() -> int:
    return int(time.time() * 1000)


def dataset_json(dataset: DatasetInput | None) -> dict[str, Any] | None:
    if dataset is None:
        return None
    d = dataset.dataset
    fields = {"name": d.name, "digest": d.digest, "source_type": d.source_type, "source": d.source}
    return {**fields, "schema": d.schema, "profile": d.profile, "tags": {t.key: t.value for t in dataset.tags}}


def dataset_from_json(data: dict[str, Any]) -> DatasetInput:
    dataset = Dataset(
        data["name"], data["digest"], data["source_type"], data["source"], data["schema"], data["profile"]
    )
    return DatasetInput(dataset, tags=[InputTag(k, v) for k, v in data["tags"].items()])


def unreachable(err: BaseException) -> bool:
    """Whether a failed write is worth retrying: the store could not be reached, did not answer in
    time or failed on its side (5xx, 429), as opposed to refusing the write itself (4xx)."""
    if isinstance(err, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    if isinstance(err, requests.HTTPError):
        status = err.response.status_code if err.response is not None else 500
    elif isinstance(err, MlflowException):  # MLflow's "API request ... failed" (retries spent) is a 500
        status = err.get_http_status_code()
    else:
        return False
    return status >= 500 or status == 429


def find_ref(client: MlflowClient, experiment_id: str, ref: str) -> str | None:
    """The run created for ``ref`` by an earlier try, if any."""
    runs = client.search_runs([experiment_id], f"tags.`{WRITE_REF}` = '{ref}'", max_results=1)
    return runs[0].info.run_id if runs else None


def apply_write(client: MlflowClient, write: Write, ids: dict[str, str], folder: Path, careful: bool) -> bool:
    """Make one journaled write in the store (``ids``: run refs -> run ids, filled as runs are
    created). ``careful`` (a retry, a replay): a run is created only if no run carries its ref
    yet. Every write is safe to make twice: params, tags, artifacts and statuses are set again,
    and the store drops a metric it has at the same step, time and value. False when there was
    nothing to do (a staged file already uploaded)."""
    op, ref = write["op"], write["ref"]
    if op == "bind":
        ids[ref] = write["run_id"]
        return True
    if op == "create":
        run_id = find_ref(client, write["experiment"], ref) if careful else None
        if run_id is None:
            tags = {**write["tags"], WRITE_REF: ref}
            run = client.create_run(write["experiment"], start_time=write["time"], tags=tags, run_name=write["name"])
            run_id = run.info.run_id
        ids[ref] = run_id
        if write["params"]:
            client.log_batch(run_id, params=[Param(k, v) for k, v in write["params"].items()])
        if write["dataset"] is not None:
            client.log_inputs(run_id, datasets=[dataset_from_json(write["dataset"])])
        return True
    run_id = ids[ref]
    if op == "status":
        client.update_run(run_id, status=write["status"])
    elif op == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in write["tags"].items()])
    elif op == "metrics":
        rows = [Metric(k, v, t, step) for k, v, t, step in write["metrics"]]
        for start in range(0, len(rows), 1000):  # MLflow's limit per batch
            client.log_batch(run_id, metrics=rows[start : start + 1000])
    elif op == "artifact":
        staged = folder / write["file"]
        if not staged.is_file():
            return False
        client.log_artifact(run_id, str(staged), write["dir"])
    elif op == "end":
        client.set_terminated(run_id, write["status"], end_time=write["time"])
    else:
        raise ValueError(f"unknown journal write {op!r}")
    return True


class Outbox:
    """The writes of one parent run's child runs on their way to the store, made in order by a
    thread of their own, so that the driver never waits on the store and the trials go on while
    it is down. Each write is first appended to a journal (JSON lines; the files it uploads are
    staged beside it), so nothing is lost to a driver that dies or to a store out of reach for
    longer than ``timeout`` seconds: ``dor-bench replay`` writes the journal into the store. A
    write the store cannot take now (unreachable, 5xx) is retried with a doubling backoff; one it
    refuses (4xx) stops the writer. When nothing waits, the journal shrinks to the ids of the runs
    still open, or goes."""

    def __init__(self, client: MlflowClient, uri: str, folder: Path, timeout: float):
        self.client, self.uri, self.folder, self.timeout = client, uri, folder, timeout
        self.path = folder / JOURNAL
        self.ids: dict[str, str] = {}  # run ref -> run id, once the store made it
        self.open: set[str] = set()  # refs of runs not ended yet
        self.waiting: deque[Write] = deque()
        self.down_since: float | None = None  # while the store does not answer: since when
        self.failure: BaseException | None = None  # what stopped the writer, raised to the driver
        self.journal: TextIO | None = None
        self.lock: TextIO | None = None  # held while the folder exists (``Tracker.recover``)
        self.writer: threading.Thread | None = None
        self.changed = threading.Condition()

    def put(self, *writes: Write) -> None:
        """Journal ``writes`` and queue them. Once the writer has stopped, they are journaled and
        why it stopped is raised."""
        if not writes:
            return
        with self.changed:
            if self.lock is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.lock = (self.folder / LOCK).open("w")
                fcntl.flock(self.lock, fcntl.LOCK_EX)
            if self.journal is None:
                self.journal = self.path.open("a", encoding="utf-8")
                if not self.journal.tell():
                    self.journal.write(json.dumps(journal_header(self.uri)) + "\n")
            self.journal.write("".join(json.dumps(write) + "\n" for write in writes))
            self.journal.flush()
            self.waiting.extend(writes)
            for write in writes:
                if write["op"] in ("create", "bind"):
                    self.open.add(write["ref"])
                elif write["op"] == "end":
                    self.open.discard(write["ref"])
            if self.failure is not None:
                raise self.failure
            if self.writer is None:
                self.writer = threading.Thread(target=self._write_all, name="dor-bench store writer", daemon=True)
                self.writer.start()
            self.changed.notify_all()

    def stage(self, ref: str, name: str, write_file: Any) -> Write:
        """The upload of an artifact ``name`` (``dir/file.ext``) to the run, to ``put``:
        ``write_file(path)`` writes the file into the outbox now."""
        relative = Path("files") / uuid.uuid4().hex[:12] / Path(name).name
        (self.folder / relative).parent.mkdir(parents=True, exist_ok=True)
        write_file(self.folder / relative)
        folder = Path(name).parent.as_posix()
        return {"op": "artifact", "ref": ref, "file": relative.as_posix(), "dir": None if folder == "." else folder}

    def drain(self) -> None:
        """Wait until every write is in the store; raise what stopped the writer (the writes it
        could not make stay in the journal)."""
        with self.changed:
            try:
                while self.waiting and self.failure is None:
                    self.changed.wait(1.0)
            except KeyboardInterrupt:
                if self.waiting:
                    log(f"[dor-bench] {len(self.waiting)} writes not in the store yet: {replay_hint(self.path)}")
                raise
            if self.failure is not None:
                raise self.failure

    def trouble(self) -> str | None:
        """``unreachable for 12 s, 34 writes waiting`` while the store does not answer, else None."""
        with self.changed:
            if self.down_since is None:
                return None
            return f"unreachable for {time.monotonic() - self.down_since:.0f} s, {len(self.waiting)} writes waiting"

    def _write_all(self) -> None:
        """The writer thread: the waiting writes in order; it ends when nothing waits and no run
        is open (``put`` starts another), or when a write fails for good."""
        try:
            while True:
                with self.changed:
                    while not self.waiting:
                        self.changed.wait()
                    write = self.waiting[0]
                self._write(write)
                with self.changed:
                    self.waiting.popleft()
                    if not self.waiting:
                        self._shrink()
                    self.changed.notify_all()
                    if not self.waiting and not self.open:
                        self.writer = None
                        return
        except BaseException as err:  # raised to the driver by its next call
            with self.changed:
                self.failure, self.down_since = err, None
                self.changed.notify_all()

    def _write(self, write: Write) -> None:
        delay, careful = 0.5, False
        while True:
            try:
                apply_write(self.client, write, self.ids, self.folder, careful)
                break
            except Exception as err:
                if not unreachable(err):
                    raise
                now = time.monotonic()
                with self.changed:
                    self.down_since = now if self.down_since is None else self.down_since
                    down, waiting = now - self.down_since, len(self.waiting)
                if down >= self.timeout:
                    raise DorBenchError(
                        f"The MLflow store '{redact(self.uri)}' has not taken a write for {down:.0f} s "
                        f"(--store-timeout {self.timeout:g}): {redact(str(err).splitlines()[0])}. "
                        f"{waiting} writes of this run are not in it; they are kept, with their files.",
                        f"once the store is back, {replay_hint(self.path)}; then run the same command again "
                        "to resume the trials that had not finished.",
                    ) from None
                time.sleep(min(delay, self.timeout - down))
                delay, careful = min(2 * delay, 10.0), True
        with self.changed:
            self.down_since = None
        if write["op"] == "artifact":  # in the store: its copy goes
            staged = self.folder / write["file"]
            staged.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                staged.parent.rmdir()

    def _shrink(self) -> None:
        """Nothing waits: the journal keeps only the open runs' ids, or goes with its folder."""
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        if not self.open:
            shutil.rmtree(self.folder, ignore_errors=True)
            if self.lock is not None:
                self.lock.close()
                self.lock = None
            return
        lines = [journal_header(self.uri)]
        lines += [{"op": "bind", "ref": ref, "run_id": self.ids[ref]} for ref in sorted(self.open)]
        fresh = self.folder / f"{JOURNAL}.new"
        fresh.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        os.replace(fresh, self.path)


def journal_header(uri: str) -> dict[str, Any]:
    """A journal's first line: its format and its store (without credentials)."""
    return {"journal": 1, "tracking_uri": redact(uri, None)}


@contextlib.contextmanager
def unlocked(lock: Path) -> Iterator[bool]:
    """Whether no live driver holds ``lock`` (then it is ours until the block ends)."""
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def read_journal(journal: Path) -> tuple[dict[str, Any], list[Write]]:
    """A journal's header and writes (a last line cut short by a driver that died is left out)."""
    try:
        lines = journal.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:  # a binary file
        lines = []
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError:
        header = {}
    if not isinstance(header, dict) or header.get("journal") != 1 or not isinstance(header.get("tracking_uri"), str):
        raise DorBenchError(
            f"'{journal}' is not a dor-bench journal.",
            f"pass the {JOURNAL} file named by the run's error (under the checkpoint folder's .outbox/).",
        )
    writes: list[Write] = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            writes.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise DorBenchError(
                f"{journal}, line {number}, is not JSON.", "restore the file as the driver left it."
            ) from None
    return header, writes


def replay_hint(journal: Path) -> str:
    return f"`dor-bench replay {journal}` writes them into the store (twice does no harm)"


def replay(journal: Path, tracking_uri: str | None = None) -> tuple[int, int, str]:
    """``dor-bench replay``: write a journal an outbox left (the store was out of reach, or the
    driver died) into the store, ``tracking_uri`` or the one it was written for. Each run is
    created once (found again by its ref), and a write made before is made again harmlessly
    (``apply_write``), so a replay can be repeated. Returns (writes made, runs created, store)."""
    header, writes = read_journal(journal)
    uri = tracking_uri or header["tracking_uri"]
    quiet_mlflow()
    short_http_retries()
    client, made = MlflowClient(uri), 0
    ids: dict[str, str] = {}
    for number, write in enumerate(writes, start=2):
        try:
            made += apply_write(client, write, ids, journal.parent, careful=True)
        except Exception as err:
            why = redact(str(err).splitlines()[0] if str(err) else type(err).__name__)
            if unreachable(err):
                raise DorBenchError(
                    f"The MLflow store '{redact(uri)}' cannot be reached: {why}",
                    "start it again (or pass the store's address with --tracking-uri) and replay again: "
                    "what is already written is not written twice.",
                ) from None
            raise DorBenchError(
                f"The MLflow store '{redact(uri)}' refused line {number} of {journal} ({write['op']}): {why}",
                "replay into the store the journal was written for (its first line names it; or --tracking-uri).",
            ) from None
    return made, sum(w["op"] == "create" for w in writes), uri
