"""Orchestrator overhead, measured in one run (compare ratios, not seconds).

Runs the same grid (examples/tiny.yaml: 6 quick trials) several ways:
  1. a plain Python loop over ``run_trial`` (no Ray, no MLflow);
  2. ``dor-bench run`` with 1 worker actor;
  3. ``dor-bench run`` with 2 worker actors;
and reports trials per minute and the driver's overhead per trial against the plain loop. Then
the two engines alone, without MLflow, 2 trials at a time: the benchmark's actor queue
(``orchestrator.benchmark.actors.run_jobs``) and Ray Tune (a ``Tuner`` over the same specs, the
sweeps' engine): the numbers behind docs/architecture.md's engine decision.

With ``--epochs N`` every tuned method trains N epochs: longer trials, so that the speed-up of 2
actors shows the per-trial cost of the orchestrator rather than its fixed start-up cost.

Usage: python perf/bench_run.py [--file examples/tiny.yaml] [--epochs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ray
import yaml


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=str(Path(__file__).parents[1] / "examples" / "tiny.yaml"))
    parser.add_argument("--epochs", type=int, help="every tuned method trains this many epochs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dor-bench-bench-run-"))
    base = bench_config(Path(args.file), args.epochs)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["DOR_BENCH_CACHE"] = tempfile.mkdtemp(prefix="dor-bench-perf-")

    from orchestrator.benchmark.planning import plan
    from orchestrator.cli import main as cli
    from orchestrator.settings.benchmark import load_benchmark
    from workers.trial import run_trial

    (work / "bench.yaml").write_text(yaml.safe_dump(base))
    trials = plan(load_benchmark(work / "bench.yaml"))
    for t in trials:  # warm every cache (data, features, pools) so all three runs do equal work
        run_trial(t.spec, {"progress": False})
    start = time.perf_counter()
    for t in trials:
        run_trial(t.spec, {"progress": False})
    loop = time.perf_counter() - start

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    timings = {}
    for actors in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.yaml"
            path.write_text(yaml.safe_dump({**base, "max_concurrency": actors}))
            start = time.perf_counter()
            cli(["run", str(path), "--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--checkpoint-dir", f"{tmp}/ckpt"])
            timings[actors] = time.perf_counter() - start
    engines = {"actor queue": actor_queue(trials), "Ray Tune": ray_tune(trials)}
    ray.shutdown()

    n = len(trials)
    print(f"\n{n} trials from {args.file}" + (f", tuned methods at {args.epochs} epochs" if args.epochs else ""))
    print(f"{'how':28} {'seconds':>8} {'trials/min':>11} {'overhead/trial s':>17}")
    print(f"{'plain loop (no Ray/MLflow)':28} {loop:8.1f} {60 * n / loop:11.1f} {'-':>17}")
    for actors, secs in timings.items():
        print(
            f"{f'dor-bench run, {actors} actor(s)':28} {secs:8.1f} {60 * n / secs:11.1f} "
            f"{(secs - loop / min(actors, n)) / n:17.2f}"
        )
    print(f"speed-up 2 actors vs 1: {timings[1] / timings[2]:.2f}x")
    print("\nengines alone (no MLflow), 2 trials at a time:")
    for name, secs in engines.items():
        print(f"{name:28} {secs:8.1f} {60 * n / secs:11.1f} {(secs - loop / min(2, n)) / n:17.2f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def bench_config(file: Path, epochs: int | None) -> dict:
    """The benchmark file's settings, its word list made absolute, ``epochs`` set for every tuned method."""
    config = yaml.safe_load(file.read_text())
    vocabulary = config.get("dor", {}).get("vocabulary")
    if isinstance(vocabulary, str) and (file.parent / vocabulary).is_file():
        config["dor"]["vocabulary"] = str(file.parent / vocabulary)
    if epochs:
        for method in config["methods"]:
            if isinstance(method, dict):
                method.setdefault("options", {})["epochs"] = epochs
    return config


def actor_queue(trials: list) -> float:
    from orchestrator.benchmark.actors import Job, run_jobs
    from workers.spec import RunOptions

    start = time.perf_counter()

    class Ignore:  # the engine alone: events go nowhere
        def started(self, job: Job) -> None: ...
        def epoch(self, job: Job, epoch: int, row: dict) -> None: ...
        def ended(self, outcome: object) -> None: ...
        def retrying(self, job: Job, retries: int) -> None: ...
        def progress(self, counts: object) -> None: ...

    run_jobs(
        [Job(t.name, t.spec.model_dump(mode="json")) for t in trials],
        RunOptions(progress=False),
        Ignore(),  # type: ignore[arg-type]  # structurally a TrialEvents
        max_concurrency=2,
        retries=0,
    )
    return time.perf_counter() - start


def ray_tune(trials: list) -> float:
    from ray import tune

    from workers.trial import run_trial

    def trainable(config: dict) -> None:
        result = run_trial(config["spec"], {"progress": False})
        tune.report({"hm": result.metrics.get("hm", 0.0)})

    with tempfile.TemporaryDirectory() as tmp:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"spec": tune.grid_search([t.spec.model_dump(mode="json") for t in trials])},
            tune_config=tune.TuneConfig(max_concurrent_trials=2),
            run_config=tune.RunConfig(storage_path=tmp, verbose=0),
        )
        start = time.perf_counter()
        tuner.fit()
        return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
