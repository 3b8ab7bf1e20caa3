"""``dor-bench tune FILE``: a resumable Ray Tune sweep whose trials are ordinary dor-bench
trials in tuning mode, each recorded as an MLflow child run under one sweep parent run.

Flow: the sweep file (``sweep_config.py``) -> a Tune search space, search algorithm and optional
ASHA scheduler -> ``sweep_trainable.sweep_trial`` per configuration (per-epoch reports and
checkpoints through Tune) -> ``_Recorder`` (a driver-side Tune callback) writes each ended trial
to MLflow -> ``sweep_report`` ranks the recorded trials and prints the best configuration.
Tune's state lives under ``<storage>/<name>``; rerunning the same command restores it.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from orchestrator import MAX_TRIALS, places
from orchestrator.console import log
from orchestrator.settings.sweep import INT_KNOBS, Range, Sweep, describe_sweep, load_sweep
from orchestrator.sweep.state import StateCopies, repair
from orchestrator.sweep.summary import report
from orchestrator.sweep.trainable import STATE, plain_config, sweep_trial
from orchestrator.tracking import (
    LEAKY,
    OBJECTIVE,
    SWEEP,
    SWEEP_FILE,
    SWEEP_STORAGE,
    TRIAL_STATUS,
    TUNE_TRIAL,
    Ending,
    LiveRuns,
    Tracker,
)
from orchestrator.translate.params import params_from_spec
from orchestrator.translate.sweeps import spec_from_sweep, spec_from_tune
from workers.methods import METHODS
from workers.methods.training import coerce_option
from workers.spec import TrialSpec, gpu_share

#: The live recorder of each running sweep, by Tune experiment path. Tune pickles its callbacks
#: into the experiment state and brings the old copies back on restore, so the callback it holds
#: is a small proxy that looks the recorder of the current driver session up here.
_RECORDERS: dict[str, _Recorder] = {}


# --------------------------------------------------------------------------- search space


def _is_int(sweep: Sweep, key: str) -> bool:
    if key in INT_KNOBS:
        return True
    default = METHODS.get(sweep.method.name).defaults.get(key.removeprefix("options."))
    return isinstance(default, int) and not isinstance(default, bool)


def param_space(sweep: Sweep) -> dict[str, Any]:
    """Tune's search space: lists become ``grid_search`` (grid) or ``choice`` (random/optuna);
    ranges become ``loguniform``/``uniform`` (``lograndint``/``randint`` for integer knobs)."""
    space: dict[str, Any] = {}
    grid = sweep.search.algorithm == "grid"
    defaults = METHODS.get(sweep.method.name).defaults
    for key, dim in sweep.space.dimensions().items():
        if isinstance(dim, Range):
            lo, hi = dim.bounds
            if _is_int(sweep, key):
                space[key] = (tune.lograndint if dim.kind == "log_uniform" else tune.randint)(int(lo), int(hi) + 1)
            else:
                space[key] = (tune.loguniform if dim.kind == "log_uniform" else tune.uniform)(lo, hi)
            continue
        if key.startswith("options."):
            name = key.removeprefix("options.")
            dim = [coerce_option(name, v, defaults[name]) for v in dim]
        space[key] = tune.grid_search(list(dim)) if grid else tune.choice(list(dim))
    return space


def search_algorithm(sweep: Sweep) -> Any:
    """BasicVariantGenerator (grid, or seeded random sampling) or a seeded OptunaSearch behind a
    ConcurrencyLimiter; both hold at most ``search.concurrency`` trials running."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if sweep.search.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=sweep.search.seed), max_concurrent=sweep.search.concurrency)
    return BasicVariantGenerator(
        max_concurrent=sweep.search.concurrency,
        random_state=sweep.search.seed if sweep.search.algorithm == "random" else None,
    )


def scheduler(sweep: Sweep) -> Any:
    """ASHA on the per-epoch objective (time = reports so far), or None (run every trial out)."""
    if not sweep.scheduler.asha:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=sweep.max_t,
        grace_period=sweep.scheduler.grace_period,
        reduction_factor=sweep.scheduler.reduction_factor,
    )


def trainable(sweep: Sweep) -> Any:
    """``sweep_trial`` bound to this sweep, with the sweep's per-trial resources and the share of
    a GPU they make (call it with Ray started: the bound values go to Ray's object store)."""
    bound = tune.with_parameters(
        sweep_trial,
        base=spec_from_sweep(sweep).model_dump(mode="json"),
        seeds=list(sweep.seeds),
        objective=sweep.objective.model_dump(mode="json"),
        gpu_share=gpu_share(sweep.resources.gpus),
    )
    return tune.with_resources(bound, {"cpu": sweep.resources.cpus, "gpu": sweep.resources.gpus})


def config_label(config: dict[str, Any]) -> str:
    """``lam=8 B=4 lr=0.01``: a trial's searched values, short."""
    short = {"lam": "lam", "outliers_per_step": "B", "pool_size": "K", "pool_strategy": "pool"}
    parts = []
    for key, value in plain_config(config).items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{short.get(key, key.removeprefix('options.'))}={text}")
    return " ".join(parts)


# --------------------------------------------------------------------------- MLflow records


class _Recorder:
    """Each Tune trial as one MLflow child run under the sweep parent, live (driver only): opened
    when the trial starts, an epoch row per Tune report, closed when it ends. On a resumed sweep,
    the runs of trials that had not ended are continued."""

    def __init__(self, sweep: Sweep, tracker: Tracker, parent: str, folder: Path):
        self.sweep, self.parent = sweep, parent
        self.copies = StateCopies(folder)  # Tune's state, kept readable for a resume
        self.runs = LiveRuns(tracker, parent)
        self.recorded: set[str] = set()  # trials whose run has ended
        for run in tracker.children(parent):
            trial = run.data.tags.get(TUNE_TRIAL)
            if trial is not None and run.info.status in ("FINISHED", "FAILED"):
                self.recorded.add(trial)
            elif trial is not None:
                logged = tracker.client.get_metric_history(run.info.run_id, "epoch/objective")
                self.runs.adopt(trial, run.info.run_id, {m.step for m in logged})
        self.ended = 0

    def started(self, trial_id: str, config: dict[str, Any]) -> None:
        if trial_id in self.recorded:
            return
        tags = {
            SWEEP: self.sweep.name,
            TUNE_TRIAL: trial_id,
            OBJECTIVE: self.sweep.objective.describe(),
            **({LEAKY: "true"} if self.sweep.leaky else {}),
        }
        params = {
            **params_from_spec(_spec_of(self.sweep, config)),
            "seed": ",".join(map(str, self.sweep.seeds)),
            **{f"tune.{k}": str(v) for k, v in plain_config(config).items()},
        }
        self.runs.start(trial_id, f"{trial_id} {config_label(config)}", tags, params)

    def result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        """One Tune report (an epoch of one seed) as the run's row at step = the report's number."""
        if trial_id in self.recorded:
            return
        if trial_id not in self.runs.runs:
            self.started(trial_id, config)
        row = {
            k: float(v)
            for k, v in result.items()
            if k not in AUTO_RESULT_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self.runs.epoch(trial_id, int(result["training_iteration"]), row)

    def record(self, trial_id: str, config: dict[str, Any], checkpoint: Any, error: str | None) -> None:
        """Close the trial's run: final metrics (``objective``, ``floor_met``, the seed-mean
        ``val/*``), the reports not yet logged, how it ended, its state as an artifact."""
        self.ended += 1
        if trial_id in self.recorded:
            return
        state = _read_state(checkpoint)
        reports = state.get("reports", [])
        spec = _spec_of(self.sweep, config)
        epochs = METHODS.get(spec.method).epochs(spec.method_options) * len(self.sweep.seeds)
        status = (
            "errored" if error and len(reports) < epochs else "completed" if len(reports) >= epochs else "early-stopped"
        )
        metrics = {**state.get("summary", {}), "reports": float(len(reports))}
        if trial_id not in self.runs.runs:  # ended before it was seen running (a restored sweep)
            self.started(trial_id, config)
        self.runs.end(
            trial_id,
            Ending(
                "FAILED" if status == "errored" else "FINISHED",
                metrics,
                reports,
                {"sweep_trial.json": {"config": plain_config(config), "state": state, "error": error}},
                tags={TRIAL_STATUS: status},
            ),
        )
        self.recorded.add(trial_id)
        log(
            f"[dor-bench] trial {trial_id} ({config_label(config)}): {status} after {len(reports)} "
            f"reports"
            + (f", objective {metrics['objective']:.4g}" if "objective" in metrics else "")
            + (f"; error: {error.splitlines()[0]}" if error else "")
        )


class SweepCallback(tune.Callback):
    """The Tune callback: a picklable proxy (it holds only the experiment path; see
    ``_RECORDERS``) that hands trial events to this driver session's recorder."""

    def __init__(self, key: str):
        self.key = key

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        _RECORDERS[self.key].started(trial.trial_id, trial.config)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        _RECORDERS[self.key].result(trial.trial_id, trial.config, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        _RECORDERS[self.key].record(trial.trial_id, trial.config, trial.checkpoint, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        _RECORDERS[self.key].record(trial.trial_id, trial.config, trial.checkpoint, _error(trial))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if trials:  # Tune has just saved its state in its staging folder, all files together
            _RECORDERS[self.key].copies.keep(Path(trials[0].local_experiment_path))
        limit = _RECORDERS[self.key].sweep.testing.exit_driver_after_trials
        if limit and _RECORDERS[self.key].ended >= limit:
            log("[dor-bench] testing.exit_driver_after_trials: the driver exits now")
            os._exit(75)  # fault injection: the driver dies without any clean-up


def _error(trial: Any) -> str:
    error = trial.get_error()
    return str(error) if error is not None else "the trial failed (Tune kept no error)"


def _read_state(checkpoint: Any) -> dict[str, Any]:
    import json

    if checkpoint is None:
        return {}
    with checkpoint.as_directory() as folder:
        path = Path(folder) / STATE
        return json.loads(path.read_text()) if path.is_file() else {}


def _spec_of(sweep: Sweep, config: dict[str, Any]) -> TrialSpec:

    return spec_from_tune(spec_from_sweep(sweep).model_dump(mode="json"), config, sweep.seeds[0])


# --------------------------------------------------------------------------- the command


def experiment_folder(sweep: Sweep, storage: str | os.PathLike[str]) -> Path:
    """Where Tune keeps this sweep's state: ``<storage>/<name>`` (name made path-safe)."""
    return Path(storage).expanduser().absolute() / re.sub(r"[^\w.-]+", "_", sweep.name)


def run_sweep(
    path: str,
    *,
    tracking_uri: str | None = None,
    address: str | None = None,
    fresh: bool = False,
    storage: str = ".dor-bench/tune",
    max_trials: int = MAX_TRIALS,
) -> int:
    """Run a sweep file, or resume it where it stopped; prints the ranked trials and the best
    configuration. Returns 0 when the sweep ran out and has a best trial, else 1."""
    from orchestrator.cluster import start_ray
    from orchestrator.preflight import SWEEP_REFUSED, check_resources, preflight_sweep

    sweep = load_sweep(path, max_trials)
    log(describe_sweep(sweep))
    store, (folder,) = places.outputs(
        tracking=(tracking_uri, sweep.tracking_uri),
        folders=[(experiment_folder(sweep, storage), "the sweep's Tune folder", "--storage")],
    )
    preflight_sweep(sweep, spec_from_sweep(sweep), tracking_uri=store, storage=folder)
    if fresh and folder.exists():
        shutil.rmtree(folder)
    restoring = tune.Tuner.can_restore(str(folder))
    for name in repair(folder) if restoring else []:  # before anything is reopened: it may refuse
        log(f"[dor-bench] {name} was cut short when the driver stopped: the sweep resumes from its last complete copy")
    tracker = Tracker(store, sweep.name, outbox=folder / ".outbox")  # writes waiting for the store
    parent = tracker.find_parent(SWEEP_STORAGE, str(folder)) if restoring else None
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if sweep.testing.exit_driver_after_trials:
        os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = "0"  # state saved every step: the kill point is exact
    start_ray(address)
    check_resources([sweep.resources], SWEEP_REFUSED)  # before the sweep's parent run is created or reopened
    if parent is None:
        parent = tracker.start_parent(
            f"sweep {Path(path).name}",
            {
                SWEEP: sweep.name,
                SWEEP_STORAGE: str(folder),
                OBJECTIVE: sweep.objective.describe(),
                SWEEP_FILE: str(path),
                **({LEAKY: "true"} if sweep.leaky else {}),
            },
        )
        tracker.log_files(
            parent, {"sweep.yaml": Path(path).read_text(encoding="utf-8"), "sweep.txt": describe_sweep(sweep)}
        )
    else:
        tracker.reopen(parent)
    _RECORDERS[str(folder)] = _Recorder(sweep, tracker, parent, folder)
    if restoring:
        log(
            f"[dor-bench] resuming the sweep saved in {folder} (finished trials are kept; "
            "unfinished ones continue from their last epoch; --fresh starts over)"
        )
        tuner = tune.Tuner.restore(
            str(folder), trainable=trainable(sweep), resume_unfinished=True, resume_errored=True, restart_errored=False
        )
    else:
        tuner = tune.Tuner(
            trainable(sweep),
            param_space=param_space(sweep),
            tune_config=tune.TuneConfig(
                metric="objective",
                mode=sweep.objective.mode,
                search_alg=search_algorithm(sweep),
                scheduler=scheduler(sweep),
                num_samples=sweep.search.samples,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=folder.name,
                storage_path=str(folder.parent),
                verbose=0,
                callbacks=[SweepCallback(str(folder))],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=1),
            ),
        )
    recorder = _RECORDERS[str(folder)]
    try:
        tuner.fit()
    except KeyboardInterrupt:
        tracker.end_parent(parent, "KILLED")
        log("[dor-bench] interrupted: Tune saved the sweep; run the same command again to resume it.")
        raise
    finally:
        _RECORDERS.pop(str(folder), None)
    unfinished = 0
    for trial in tune.ExperimentAnalysis(str(folder)).trials:
        if trial.status == "TERMINATED":  # ended trials the callback did not see (the driver died)
            recorder.record(trial.trial_id, trial.config, trial.checkpoint, None)
        elif trial.status == "ERROR":
            recorder.record(trial.trial_id, trial.config, trial.checkpoint, _error(trial))
        else:
            unfinished += 1
    tracker.end_parent(parent, "KILLED" if unfinished else "FINISHED")
    if unfinished:  # Ctrl-C: Tune stopped and saved the sweep
        log(f"[dor-bench] interrupted with {unfinished} trials unfinished: run the same command again to resume them.")
    code = report(sweep, tracker, parent, folder / "report", path)
    return 1 if unfinished else code
