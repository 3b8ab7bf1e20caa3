"""`dor-bench server` for real (PostgreSQL + MLflow's server with served artifacts, on free ports)
and a grid's driver against it: every trial one FINISHED run with its metrics and artifacts, the
server's processes stopped and started again mid-grid with nothing lost, and a store down past
``--store-timeout`` leaving a journal that ``dor-bench replay`` writes in, once however often,
and that the next run of the same command takes in by itself before it resumes."""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.server import STORE_TIMEOUT_ENV, TeamServer, free_port, postgres_bin
from orchestrator.tracking import JOURNAL, RUN_KEY, TRIAL_NAME, WRITE_REF
from workers.errors import DorBenchError

REPO = Path(__file__).parents[2]
ARTIFACTS = {"trial_spec.json", "result.json", "per_class.json", "reliability.png", "prompt.pt", "outputs.npz"}


def postgres_or_skip() -> None:
    """PostgreSQL's programs, installed by scripts/ensure-postgres if they are missing."""
    try:
        postgres_bin()
    except DorBenchError:
        subprocess.run([str(REPO / "scripts" / "ensure-postgres")], check=False)
        try:
            postgres_bin()
        except DorBenchError as err:
            pytest.skip(f"PostgreSQL is not installed and could not be installed here: {err.what}")


@pytest.fixture(scope="module")
def server() -> Iterator[TeamServer]:
    postgres_or_skip()
    # not under pytest's tmp folder: as root, PostgreSQL runs as `postgres`, who must reach it
    data = Path(tempfile.mkdtemp(prefix="dor-bench-server-"))
    data.chmod(0o755)
    team = TeamServer(data, free_port(), workers=1)
    try:
        with ThreadPoolExecutor(1) as pool:  # the server and Ray start side by side
            starting = pool.submit(team.start)
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            starting.result()
        yield team
    finally:
        ray.shutdown()
        team.stop()
        shutil.rmtree(data, ignore_errors=True)


def write_benchmark(folder: Path, name: str, epochs: int = 2, seeds: list[int] | None = None) -> Path:
    """examples/tiny.yaml named ``name`` (its word list beside it)."""
    config = yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())
    config["name"] = name
    config["methods"][1]["options"]["epochs"] = epochs
    config["seeds"] = seeds or [1, 2]
    (folder / "words.txt").write_text((REPO / "examples" / "words.txt").read_text())
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(path: Path, server: TeamServer, folder: Path, *extra: str) -> int:
    return main(
        [
            "run",
            str(path),
            "--tracking-uri",
            server.uri,
            "--checkpoint-dir",
            str(folder / "ckpt"),
            "--report-dir",
            str(folder / "report"),
            *extra,
        ]
    )


def trial_runs(server: TeamServer, experiment: str) -> list:
    client = MlflowClient(server.uri)
    found = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([found.experiment_id]) if RUN_KEY in r.data.tags]


def assert_complete(server: TeamServer, run, epochs: int) -> None:
    """A FINISHED trial run with its final and ``epochs`` epoch metrics and every artifact, in the
    served store."""
    client = MlflowClient(server.uri)
    assert run.info.status == "FINISHED"
    assert {"base/acc", "new/acc", "hm", "avg/ece"} <= set(run.data.metrics)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == ARTIFACTS
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    served = server.artifacts / run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    assert json.loads((served / "result.json").read_text())["metrics"]["hm"] == pytest.approx(run.data.metrics["hm"])
    if "coop" in run.data.tags[TRIAL_NAME]:  # each epoch's row once, at its step
        history = client.get_metric_history(run.info.run_id, "epoch/train/loss")
        assert sorted(m.step for m in history) == list(range(1, epochs + 1))


def test_a_grid_records_every_trial_in_postgres_with_served_artifacts(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(write_benchmark(tmp_path, "team", seeds=[1]), server, tmp_path) == 0
    runs = trial_runs(server, "team")
    assert len(runs) == 3 and len({r.data.tags[RUN_KEY] for r in runs}) == 3
    for r in runs:
        assert_complete(server, r, 2)
    assert not any((tmp_path / "ckpt" / ".outbox").iterdir())  # every write made: no journal left


def test_server_restarts_mid_grid_lose_nothing(server, tmp_path, monkeypatch, capsys):
    """PostgreSQL under MLflow's server, then the server, stopped for a few seconds each while
    trials run."""
    monkeypatch.chdir(tmp_path)
    outages: list[tuple[float, float]] = []
    over = threading.Event()

    def restart(stop, start) -> None:
        down = time.time()
        stop()
        time.sleep(3)
        start()
        outages.append((down, time.time()))

    def chaos() -> None:
        if not first_finished(server, "restarts", over):
            return
        restart(server.stop_postgres, server.start_postgres)
        restart(server.stop_mlflow, server.start_mlflow)

    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    code = run(write_benchmark(tmp_path, "restarts", epochs=3), server, tmp_path)
    over.set()
    thread.join(timeout=300)
    assert code == 0
    assert len(outages) == 2
    runs = trial_runs(server, "restarts")
    assert len(runs) == 6 and len({r.data.tags[RUN_KEY] for r in runs}) == 6  # one run per trial
    for r in runs:
        assert_complete(server, r, 3)
    # the grid went on while the store was down: trials ended in an outage, recorded at that time
    assert any(start * 1000 <= r.info.end_time <= end * 1000 for r in runs for start, end in outages)


def first_finished(server: TeamServer, experiment: str, over: threading.Event) -> bool:
    """Wait until a trial of ``experiment`` has a FINISHED run (False: the grid is ``over`` first)."""
    client = MlflowClient(server.uri)
    while not over.is_set():
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id]) if found is not None else []
        if any(RUN_KEY in r.data.tags and r.info.status == "FINISHED" for r in runs):
            return True
        time.sleep(0.2)
    return False


def test_a_store_down_past_the_timeout_leaves_a_journal_that_replays_once(server, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(STORE_TIMEOUT_ENV, "600")  # put back after the flag below sets it
    stopped, over = threading.Event(), threading.Event()

    def chaos() -> None:
        if first_finished(server, "timeout", over):
            server.stop_postgres()  # MLflow answers 5xx from now on
            stopped.set()

    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    path = write_benchmark(tmp_path, "timeout", seeds=[1])
    code = run(path, server, tmp_path, "--store-timeout", "3")
    over.set()
    thread.join(timeout=60)
    assert code == 2 and stopped.is_set()
    err = capsys.readouterr().err
    assert "has not taken a write for" in err and "dor-bench replay" in err
    finished = {line.split()[-1] for line in err.splitlines() if line.startswith("[dor-bench] finished ")}
    [journal] = (tmp_path / "ckpt" / ".outbox").glob(f"*/{JOURNAL}")
    writes = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    assert finished and {w["status"] for w in writes if w["op"] == "end"} >= {"FINISHED"}

    server.start_postgres()
    for _ in range(2):  # twice = once
        assert main(["replay", str(journal)]) == 0
        runs = trial_runs(server, "timeout")
        assert len(runs) == len({r.data.tags[WRITE_REF] for r in runs})  # no run made twice
        done = {r.data.tags[TRIAL_NAME]: r for r in runs if r.info.status == "FINISHED"}
        assert set(done) == finished  # every trial the driver saw finish is in the store
        for r in done.values():
            assert_complete(server, r, 2)
    assert "replayed" in capsys.readouterr().err

    # the same command again: it writes the journal the stopped driver left (a third replay),
    # skips the trials it finished and runs the rest
    gc.collect()  # the stopped driver's outbox lets go of its journal, as a process that ends does
    assert run(path, server, tmp_path) == 0
    assert "a stopped driver left" in capsys.readouterr().err
    assert not journal.parent.exists()
    runs = trial_runs(server, "timeout")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 3 and len({r.data.tags[RUN_KEY] for r in finished}) == 3
    assert {r.info.run_id for r in finished} >= {r.info.run_id for r in done.values()}
