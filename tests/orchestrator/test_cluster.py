"""`dor-bench run` on a multi-node Ray cluster on this machine (Ray's own ``cluster_utils.Cluster``:
a head and worker nodes, each a real raylet with its own resources): a node killed mid-grid loses
no trial, a node that joins mid-grid gets trials, a trial granted a GPU that torch cannot see
fails at once and clearly."""

from __future__ import annotations

import threading
import time

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from orchestrator.benchmark.actors import granted_device
from orchestrator.tracking import ATTEMPTS, NODE, TRIAL_NAME
from tests.helpers.grids import child_runs, run, write_benchmark
from workers.trial import TrialError


@pytest.fixture
def cluster():
    """A head that runs no trials (0 CPUs) and one worker node of 1 CPU; the test adds more."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def node_id(node) -> str:
    return node.node_id[:12]


def test_a_node_killed_mid_grid_loses_no_trial_and_a_joining_node_gets_work(cluster, tmp_path):
    """Two worker nodes run the grid; once a trial on the second has logged an epoch, that node is
    removed and a third joins. Every trial ends as exactly one FINISHED run; the killed trial
    resumed from its checkpoint in the same run (each epoch logged once) and the new node ran
    trials."""
    doomed = cluster.add_node(num_cpus=1)
    epochs = 5
    path = write_benchmark(
        tmp_path,
        name="nodes",
        shots=4,
        seeds=[1, 2, 3],
        methods=[{"name": "coop", "options": {"epochs": epochs, "batch_size": 2}, "dor": [False]}],
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome: list[int] = []
    grid = threading.Thread(target=lambda: outcome.append(run(path, uri, tmp_path)))
    grid.start()
    client, victim, joined = MlflowClient(uri), None, None
    deadline = time.monotonic() + 240
    while victim is None and grid.is_alive() and time.monotonic() < deadline:
        for r in child_runs(uri, "nodes") if client.get_experiment_by_name("nodes") else []:
            on_doomed = r.data.tags.get(NODE, "").endswith(node_id(doomed))
            if (
                on_doomed
                and r.info.status == "RUNNING"
                and client.get_metric_history(r.info.run_id, "epoch/train/loss")
            ):
                victim = r.data.tags[TRIAL_NAME]
        time.sleep(0.1)
    assert victim is not None, "no trial reached an epoch on the second node"
    cluster.remove_node(doomed)
    joined = cluster.add_node(num_cpus=1)
    grid.join(timeout=300)
    assert not grid.is_alive() and outcome == [0]

    runs = child_runs(uri, "nodes")
    assert sorted(r.data.tags[TRIAL_NAME] for r in runs) == [f"coop/shapes/seed{s}" for s in (1, 2, 3)]
    assert all(r.info.status == "FINISHED" for r in runs)  # exactly one FINISHED run per trial
    [killed] = [r for r in runs if r.data.tags[TRIAL_NAME] == victim]
    assert killed.data.tags[ATTEMPTS] == "2" and not killed.data.tags[NODE].endswith(node_id(doomed))
    steps = [m.step for m in client.get_metric_history(killed.info.run_id, "epoch/train/loss")]
    assert sorted(steps) == list(range(1, epochs + 1))  # resumed in the same run, every epoch once
    where = {r.data.tags[NODE].split()[-1] for r in runs}
    assert node_id(joined) in where  # the node that joined mid-grid ran a trial


def test_nodes_that_cannot_run_the_trials_are_refused_before_anything_is_scheduled(cluster, tmp_path, capsys):
    """Preflight runs on the worker nodes too: a node whose cache folder cannot be written, and a
    node with a GPU in Ray that torch cannot see (a logical GPU: no device behind it here), each
    named with its problem, before any run is created. CoOp's trials ask for a GPU (its own
    resources), zero-shot's for a CPU only, so each node is checked for the trials it could run."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the GPU node would rightly pass")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    broken = cluster.add_node(num_cpus=1, env_vars={"DOR_BENCH_CACHE": str(blocker / "cache")})
    gpu = cluster.add_node(num_cpus=1, num_gpus=1)
    methods = [
        {"name": "zeroshot"},
        {"name": "coop", "options": {"epochs": 1, "batch_size": 16}, "dor": [False], "resources": {"gpus": 1}},
    ]
    path = write_benchmark(tmp_path, name="nodes-pre", seeds=[1], methods=methods)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run(path, uri, tmp_path) == 2
    err = capsys.readouterr().err
    assert f"on node {gpu.node_ip_address} {node_id(gpu)}: the trials ask for GPUs" in err
    assert "sees no CUDA device" in err and "resources.gpus: 0" in err
    assert f"on node {broken.node_ip_address} {node_id(broken)}: the cache folder ($DOR_BENCH_CACHE)" in err
    assert "Traceback" not in err
    assert MlflowClient(uri).get_experiment_by_name("nodes-pre") is None or not child_runs(uri, "nodes-pre")


def test_a_trial_granted_a_gpu_that_torch_cannot_see_fails_at_once():
    """The trial's own guard (a node that joined after preflight): never silently on the CPU."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(TrialError) as raised:
        granted_device(["0"], "auto")
    assert "Ray granted this trial GPU 0" in raised.value.message and "resources.gpus: 0" in raised.value.message
