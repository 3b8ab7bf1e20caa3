"""``dor-bench run FILE``: validate, preflight, skip what is done, run the rest on Ray, record
every trial in MLflow, print the tables and write the report (orchestrator/report/build.py)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

from mlflow.tracking import MlflowClient

from orchestrator import MAX_TRIALS, places
from orchestrator.benchmark.actors import GridCounts, Job, Outcome, Shape, run_jobs
from orchestrator.benchmark.planning import PlannedTrial, validate_file
from orchestrator.cluster import start_ray
from orchestrator.console import GridDisplay, LogFormat, log
from orchestrator.preflight import RUN_REFUSED, check_nodes, check_resources, preflight
from orchestrator.report.build import build_report, default_out_dir
from orchestrator.report.collect import spec_values
from orchestrator.secrets import redact
from orchestrator.settings.benchmark import Benchmark
from orchestrator.tracking import BENCHMARK_FILE, NODE, LiveRuns, Tracker, epoch_row, trial_end, trial_start
from workers.errors import DorBenchError
from workers.methods import METHODS
from workers.spec import RunOptions, TrialResult


def run_benchmark(
    path: str,
    *,
    overrides: Sequence[str] = (),
    only: Sequence[str] = (),
    max_trials: int = MAX_TRIALS,
    dry_run: bool = False,
    tracking_uri: str | None = None,
    address: str | None = None,
    rerun: bool = False,
    checkpoint_dir: str = ".dor-bench/checkpoints",
    report_dir: str | None = None,
    log_format: LogFormat = "text",
) -> int:
    """Run (or resume) a benchmark file, then print its tables and write the report into
    ``report_dir`` (default reports/<name>); returns the exit code (1 when any trial failed).
    ``overrides`` and ``only`` change and filter the plan (a grid above ``max_trials`` is
    refused); ``dry_run`` prints it against the
    store (to run, to skip, to resume) and stops before anything is written."""
    bench, trials, plan = validate_file(path, overrides, only, max_trials, tracking_uri)
    log(plan)
    store, (checkpoints, reports) = places.outputs(
        tracking=(None, bench.tracking_uri),
        folders=[
            (checkpoint_dir, "the checkpoint folder", "--checkpoint-dir"),
            (report_dir or default_out_dir(bench.name), "the report folder", "--report-dir"),
        ],
    )
    if dry_run:
        return print_dry_run(trials, store, bench.name, checkpoints, rerun)
    preflight(bench, trials, tracking_uri=store, checkpoint_dir=checkpoints, report_dir=reports)
    tracker = Tracker(store, bench.name, outbox=checkpoints / ".outbox")  # writes waiting for the store
    keys = {t.run_key for t in trials}
    stale = tracker.close_stale(keys)
    done = set() if rerun else tracker.finished_keys(keys)
    todo = [t for t in trials if t.run_key not in done]
    resumable = sum((checkpoints / f"{t.run_key}.pt").is_file() for t in todo)
    log(
        f"[dor-bench] {len(done)} of {len(trials)} trials already finished (skipped"
        f"{'; --rerun to force' if done else ''}), {len(todo)} to run"
        f"{f', {resumable} resuming from checkpoints' if resumable else ''}"
        f"{f'; {stale} interrupted runs marked KILLED' if stale else ''}."
    )
    display = GridDisplay(log_format)  # made first: JSON events keep the real stdout
    # With JSON events, stdout carries nothing else: what Ray or the tables print goes to stderr.
    with contextlib.redirect_stdout(sys.stderr) if log_format == "json" else contextlib.nullcontext():
        parent = run_grid(bench, path, plan, address, todo, tracker, checkpoints, display) if todo else None
        finished = tracker.finished_keys(keys)
        try:
            report = build_report(
                tracker.uri, bench.name, out_dir=reports, planned=[spec_values(t.spec) for t in trials]
            )
            print(report.terminal)
            if parent is not None:
                tracker.log_files(parent, {}, report.files["parquet"].parent)
        except DorBenchError as err:  # the trials are recorded; only the report is missing
            log(f"[dor-bench] no report: {err.message}")
    display.finished(len(finished), len(keys))
    return 0 if len(finished) == len(keys) else 1


def run_grid(
    bench: Benchmark,
    path: str,
    plan: str,
    address: str | None,
    todo: list[PlannedTrial],
    tracker: Tracker,
    checkpoints: Path,
    display: GridDisplay,
) -> str:
    """Start Ray, open the parent run (the benchmark file and the plan as its artifacts) and run
    ``todo`` on worker actors, each trial's child run live; the parent ends FINISHED, FAILED (a
    trial failed) or KILLED (interrupted). Returns the parent run's id."""
    start_ray(address)
    check_resources([t.resources for t in todo], RUN_REFUSED)
    check_nodes(bench, todo, RUN_REFUSED)
    parent = tracker.start_parent(f"run {Path(path).name}", {BENCHMARK_FILE: str(path)})
    tracker.log_files(parent, {"benchmark.yaml": Path(path).read_text(encoding="utf-8"), "plan.txt": plan})
    grid = LiveGrid(LiveRuns(tracker, parent), {t.name: t for t in todo}, checkpoints, display)
    # a trial resuming from its checkpoint continues the run an interrupted driver left KILLED,
    # moved under this parent: one run per trial, its logged epochs not logged again
    resuming = {t.run_key for t in todo if (checkpoints / f"{t.run_key}.pt").is_file()}
    for key, (run_id, steps) in tracker.interrupted(resuming).items():
        grid.runs.adopt(key, run_id, steps)
    display.store = grid.runs.trouble
    status = "FINISHED"
    try:
        progress = run_jobs(
            [make_job(t, bench) for t in todo],
            RunOptions(checkpoint_dir=str(checkpoints), keep_dir=str(checkpoints), progress=False),
            grid,
            max_concurrency=bench.max_concurrency,
            retries=bench.retries,
        )
        display.close()
        log(progress.line())
        status = "FAILED" if progress.failed else "FINISHED"
    except Exception:
        status = "FAILED"  # e.g. the store stayed unreachable past --store-timeout
        raise
    except KeyboardInterrupt:
        status = "KILLED"
        log(
            "[dor-bench] interrupted: finished trials are recorded; run the same command "
            "again to resume the rest from their checkpoints."
        )
        raise
    finally:
        grid.runs.abandon()
        tracker.end_parent(parent, status)
    return parent


def print_dry_run(
    trials: list[PlannedTrial], tracking_uri: str, experiment: str, checkpoints: Path, rerun: bool
) -> int:
    """Each planned trial and what ``run`` would do with it, reading the store without writing
    to it (a sqlite store that does not exist yet is not created)."""
    keys = {t.run_key for t in trials}
    done: set[str] = set()
    missing = tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists()
    try:
        found = not missing and not rerun and MlflowClient(tracking_uri).get_experiment_by_name(experiment) is not None
    except Exception as err:  # the store cannot be read (a server down, not a database): say so, as `run` would
        why = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DorBenchError(
            f"Cannot read the MLflow tracking store '{redact(tracking_uri)}': {redact(why)}",
            "check tracking_uri (or --tracking-uri): a database file like sqlite:///mlflow.db, or a server that is up.",
        ) from None
    if found:
        done = Tracker(tracking_uri, experiment).finished_keys(keys)
    actions = {
        t.name: "skip" if t.run_key in done else "resume" if (checkpoints / f"{t.run_key}.pt").is_file() else "run"
        for t in trials
    }
    for t in trials:
        print(f"{actions[t.name]:7} {t.name}  {t.run_key}")
    counts = {a: list(actions.values()).count(a) for a in ("run", "resume", "skip")}
    log(
        f"[dor-bench] dry run: {len(trials)} trials: {counts['run']} to run, {counts['resume']} to resume "
        f"from checkpoints, {counts['skip']} finished (skipped); nothing was run or written."
    )
    return 0


def make_job(trial: PlannedTrial, bench: Benchmark) -> Job:
    testing = bench.testing
    kill = testing.kill_worker if testing and testing.kill_worker else None
    hit = lambda ref: ref in (trial.name, trial.run_key)
    return Job(
        name=trial.name,
        spec=trial.spec.model_dump(mode="json"),
        shape=Shape(trial.resources.cpus, trial.resources.gpus, trial.resources.memory_gb),
        kill_at_epoch=kill.epoch if kill and hit(kill.trial) else None,
        fail=bool(testing and any(hit(r) for r in testing.fail_trials)),
    )


class LiveGrid:
    """The benchmark's ``TrialEvents``: each trial's MLflow child run opens when a worker takes it,
    takes its epochs as they end and closes with its result (only the driver writes); the
    terminal shows the same events (``GridDisplay``)."""

    def __init__(self, runs: LiveRuns, trials: dict[str, PlannedTrial], checkpoints: Path, display: GridDisplay):
        self.runs, self.trials, self.checkpoints, self.display = runs, trials, checkpoints, display

    def started(self, job: Job) -> None:
        trial = self.trials[job.name]
        tags, params, dataset = trial_start(trial.name, trial.spec, job.attempt + 1)
        self.runs.start(trial.run_key, trial.name, {**tags, NODE: job.where}, params, dataset)
        epochs = METHODS.get(trial.spec.method).epochs(trial.spec.method_options)
        self.display.started(trial.name, epochs, job.attempt + 1)

    def epoch(self, job: Job, epoch: int, row: dict[str, float]) -> None:
        metrics = epoch_row(row)
        self.runs.epoch(self.trials[job.name].run_key, epoch, metrics)
        self.display.epoch(job.name, epoch, metrics)

    def ended(self, outcome: Outcome) -> None:
        trial = self.trials[outcome.job.name]
        result = TrialResult.model_validate(outcome.result) if outcome.result else None
        ending = trial_end(trial.name, trial.spec, result, outcome.error, outcome.figures, outcome.files)
        self.runs.end(trial.run_key, ending)
        if result is not None:  # recorded: the checkpoint goes (the worker removed its kept files)
            (self.checkpoints / f"{trial.run_key}.pt").unlink(missing_ok=True)
        self.display.ended(trial.name, result.metrics if result else None, outcome.error or None)

    def retrying(self, job: Job, retries: int) -> None:
        self.display.message(
            f"[dor-bench] worker died during '{job.name}'; retry {job.attempt}/{retries} from its last checkpoint"
        )

    def progress(self, counts: GridCounts) -> None:
        self.display.grid(counts.line())
