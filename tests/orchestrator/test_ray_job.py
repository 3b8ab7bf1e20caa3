"""`ray job submit -- dor-bench run FILE` end to end against a local Ray head started with `ray start`
(token authentication on, as Ray's clusters have it): the job finishes with every output where
asked; a job in a temporary working copy is refused naming what to set; `ray job stop` (SIGTERM)
ends the parent and the running trial KILLED with its checkpoint kept, and the same command
resumes it."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.server import free_port
from orchestrator.tracking import BENCHMARK_FILE, PARENT, RUN_KEY
from tests.helpers.grids import child_runs, write_benchmark

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head on 127.0.0.1 with its job server; yields (env for Ray commands, job address)."""
    folder = tmp_path_factory.mktemp("head")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    port, dashboard = free_port(), free_port()
    start = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    start += ["--num-cpus", "2", "--include-dashboard", "true", "--dashboard-host", "127.0.0.1"]
    start += ["--dashboard-port", str(dashboard), "--temp-dir", str(folder / "ray")]  # not /tmp/ray: ours alone
    # --block: the head lives as long as this process; stopping it stops only this cluster
    ray_head = subprocess.Popen(start, env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jobs = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while ray_cmd(env, "job", "list", "--address", jobs, timeout=60).returncode != 0:
        assert ray_head.poll() is None and time.monotonic() < deadline, "the Ray head did not start"
        time.sleep(1)
    try:
        yield env, jobs
    finally:
        ray_head.terminate()
        ray_head.wait(timeout=60)


def ray_cmd(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_ray_job_in_a_temporary_working_copy_is_refused_naming_what_to_set(head, tmp_path):
    env, jobs = head
    write_benchmark(tmp_path, name="copy", seeds=[1])
    done = ray_cmd(
        env, "job", "submit", "--address", jobs, "--working-dir", str(tmp_path), "--", str(BIN / "dor-bench"),
        "run", "bench.yaml",
    )  # fmt: skip
    assert done.returncode != 0
    log = done.stdout + done.stderr
    assert "This Ray job runs in a temporary copy of its working folder" in log
    assert "set --checkpoint-dir to an absolute path" in log and "set --report-dir" in log
    assert "Traceback" not in log


def test_ray_job_stop_ends_runs_killed_keeps_checkpoints_and_the_same_job_resumes(head, tmp_path):
    """Submitted, stopped mid-trial, submitted again: the second job finishes the trial in the same
    run from its checkpoint, and every output is where the command asked (not in Ray's folders)."""
    env, jobs = head
    epochs = 8
    path = write_benchmark(
        tmp_path,
        name="stop",
        shots=4,
        seeds=[1],
        methods=[{"name": "coop", "options": {"epochs": epochs, "batch_size": 2}, "dor": [False]}],
    )
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    cmd = [str(BIN / "dor-bench"), "run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path / "ckpt")]
    cmd += ["--report-dir", str(tmp_path / "report")]
    submitted = ray_cmd(env, "job", "submit", "--no-wait", "--address", jobs, "--", *cmd)
    job_id = re.search(r"raysubmit_\w+", submitted.stdout + submitted.stderr)
    assert job_id, submitted.stdout + submitted.stderr
    client, deadline = MlflowClient(uri), time.monotonic() + 180
    while time.monotonic() < deadline:  # until the trial has logged two epochs
        experiment = client.get_experiment_by_name("stop") if (tmp_path / "store" / "mlflow.db").exists() else None
        runs = child_runs(uri, "stop") if experiment else []
        if runs and len(client.get_metric_history(runs[0].info.run_id, "epoch/train/loss")) >= 2:
            break
        time.sleep(0.2)
    else:
        pytest.fail("no trial logged two epochs: " + ray_cmd(env, "job", "logs", "--address", jobs, job_id[0]).stdout)
    stopped = ray_cmd(env, "job", "stop", "--address", jobs, job_id[0])
    assert stopped.returncode == 0, stopped.stderr
    logs = ray_cmd(env, "job", "logs", "--address", jobs, job_id[0]).stdout
    assert "run the same command again to resume" in logs, logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]

    [parent] = [r for r in client.search_runs([experiment.experiment_id]) if BENCHMARK_FILE in r.data.tags]
    [trial] = child_runs(uri, "stop")
    assert parent.info.status == "KILLED" and trial.info.status == "KILLED"
    assert 2 <= len(client.get_metric_history(trial.info.run_id, "epoch/train/loss")) < epochs
    assert (tmp_path / "ckpt" / f"{trial.data.tags[RUN_KEY]}.pt").is_file()  # kept for the resume

    again = ray_cmd(env, "job", "submit", "--address", jobs, "--", *cmd)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "1 resuming from checkpoints" in again.stdout + again.stderr
    [resumed] = child_runs(uri, "stop")  # the KILLED run, continued under the new parent: one run per trial
    assert resumed.info.run_id == trial.info.run_id and resumed.info.status == "FINISHED"
    assert resumed.data.tags.get(PARENT) not in (parent.info.run_id, None)
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "epoch/train/loss")]
    assert sorted(steps) == list(range(1, epochs + 1))  # every epoch once, the first ones before the stop
    assert (tmp_path / "report" / "results.parquet").is_file()
    assert (tmp_path / "store" / "mlruns").is_dir()  # artifacts beside the store, not in the job's folder


def test_sigterm_ends_the_parent_and_running_trials_killed(tmp_path):
    """`scancel` or `kill`: SIGTERM to `dor-bench run` on a local Ray stops it as Ctrl-C does."""
    path = write_benchmark(
        tmp_path,
        name="term",
        shots=4,
        seeds=[1],
        methods=[{"name": "coop", "options": {"epochs": 30, "batch_size": 2}, "dor": [False]}],
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [str(BIN / "dor-bench"), "run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path / "ckpt")]
    env = {**os.environ, "RAY_ADDRESS": "local"}  # a new local Ray, whatever else runs here
    process = subprocess.Popen([*cmd, "--report-dir", str(tmp_path / "r")], env=env, stderr=subprocess.PIPE, text=True)
    client, deadline = MlflowClient(uri), time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        experiment = client.get_experiment_by_name("term") if (tmp_path / "mlflow.db").exists() else None
        runs = child_runs(uri, "term") if experiment else []
        if runs and client.get_metric_history(runs[0].info.run_id, "epoch/train/loss"):
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM and "terminated (SIGTERM)" in err, err[-3000:]
    [trial] = child_runs(uri, "term")
    [parent] = [r for r in client.search_runs([experiment.experiment_id]) if BENCHMARK_FILE in r.data.tags]
    assert trial.info.status == parent.info.status == "KILLED"
