"""The driver against a team's server under load, measured in one run.

Starts ``dor-bench server`` (PostgreSQL + MLflow's server with served artifacts, through
``orchestrator.server.TeamServer``) in a temporary folder, runs a grid of short trials on 2 worker
actors against it (tiny-clip on the built-in shapes data: zero-shot and 1-epoch CoOp over
``--seeds`` seeds, 200 trials by default), then counts what the store holds: every trial one
FINISHED run with every metric of its ``result.json`` and every artifact. Prints the wall time,
the wall time per trial and the driver process's CPU seconds per trial (its MLflow writer thread
included), without the end-of-run report (timed again on its own with ``dor-bench report``).

Usage: python perf/bench_load.py [--seeds 100]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ray
import yaml

REPO = Path(__file__).parents[1]
ARTIFACTS = {"trial_spec.json", "result.json", "per_class.json", "reliability.png", "prompt.pt", "outputs.npz"}


def driver_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def benchmark(folder: Path, seeds: int) -> Path:
    config = yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())
    config.update(name="load", seeds=list(range(1, seeds + 1)), max_concurrency=2)
    config["methods"] = ["zeroshot", {"name": "coop", "options": {"epochs": 1, "batch_size": 16}, "dor": [False]}]
    del config["dor"]
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def missing(server, experiment: str, expected: int) -> list[str]:
    """What the store lacks: a trial without exactly one FINISHED run, a metric or an artifact."""
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking import RUN_KEY, search_all

    client = MlflowClient(server.uri)
    found = client.get_experiment_by_name(experiment)
    runs = [r for r in search_all(client, found.experiment_id, "") if RUN_KEY in r.data.tags]
    problems = []
    keys = [r.data.tags[RUN_KEY] for r in runs]
    if len(runs) != expected or len(set(keys)) != expected:
        problems.append(f"{len(runs)} runs for {len(set(keys))} trials, {expected} planned")
    for r in runs:
        name = r.data.tags["dor_bench.trial"]
        if r.info.status != "FINISHED":
            problems.append(f"{name}: {r.info.status}")
            continue
        served = server.artifacts / r.info.artifact_uri.removeprefix("mlflow-artifacts:/")
        files = {p.name for p in served.iterdir()} if served.is_dir() else set()
        if files != ARTIFACTS:
            problems.append(f"{name}: artifacts {sorted(files)}")
            continue
        result = json.loads((served / "result.json").read_text())
        lost = set(result["metrics"]) - set(r.data.metrics)
        lost |= {f"epoch/{k}" for row in result["history"] for k in row if k != "epoch"} - set(r.data.metrics)
        if lost:
            problems.append(f"{name}: metrics missing {sorted(lost)[:5]}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100, help="seeds x (zero-shot, CoOp) = trials")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache = os.environ["DOR_BENCH_CACHE"] = tempfile.mkdtemp(prefix="dor-bench-perf-")

    from orchestrator.cli import main as cli
    from orchestrator.server import TeamServer, free_port

    folder = Path(tempfile.mkdtemp(prefix="dor-bench-load-"))
    folder.chmod(0o755)  # as root, PostgreSQL runs as `postgres`, who must reach its cluster
    trials = 2 * args.seeds
    try:
        with TeamServer(folder / "server", free_port(), workers=2) as server:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            path = benchmark(folder, args.seeds)
            log = folder / "run.log"
            cpu, start = driver_cpu(), time.perf_counter()
            with log.open("w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                code = cli(["run", str(path), "--tracking-uri", server.uri, "--checkpoint-dir", str(folder / "ckpt")])
            wall, cpu = time.perf_counter() - start, driver_cpu() - cpu
            ray.shutdown()
            problems = missing(server, "load", trials)
            report_cpu, report_start = driver_cpu(), time.perf_counter()
            with log.open("a") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                cli(["report", "--experiment", "load", "--tracking-uri", server.uri, "--out", str(folder / "rep")])
            report_wall, report_cpu = time.perf_counter() - report_start, driver_cpu() - report_cpu
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    print(f"{trials} trials (tiny-clip, shapes; zero-shot and 1-epoch CoOp) on 2 actors, PostgreSQL-backed server")
    print(f"exit code {code}; store: {'complete' if not problems else f'{len(problems)} problems'}")
    for problem in problems[:20]:
        print(f"  {problem}")
    print(f"wall {wall:.1f} s = {wall / trials:.2f} s per trial, of which the report {report_wall:.1f} s")
    grid = cpu - report_cpu
    print(f"driver CPU {cpu:.1f} s; without the report ({report_cpu:.1f} s): {grid / trials:.3f} s per trial")
    return 0 if code == 0 and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
