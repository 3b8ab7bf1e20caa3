"""Ray start-up for the driver: a cluster from ``--address`` or ``$RAY_ADDRESS``, else a local Ray;
and what that cluster can place."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

import ray

from workers.errors import DorBenchError


def start_ray(address: str | None) -> None:
    """Connect to ``address`` (else ``$RAY_ADDRESS``; under ``ray job submit`` Ray sets it to its
    cluster), or start a local Ray when neither is set."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
            configure_logging=True,
        )
    except (ValueError, ConnectionError) as err:
        raise DorBenchError(
            f"Cannot connect to the Ray cluster at '{address}' (--address or $RAY_ADDRESS): {err}",
            "give the head's address as HOST:PORT (`ray status` on the head prints it), start one with "
            "`ray start --head`, or unset RAY_ADDRESS to run on a local Ray.",
        ) from None
    if threading.current_thread() is threading.main_thread():  # ray.init makes SIGTERM exit at once
        signal.signal(signal.SIGTERM, on_sigterm)


def on_other_nodes(check: Callable[..., list[str]], shapes: Sequence[Any], *args: Any) -> dict[str, list[str]]:
    """``check(*args, gpus)`` run on every live node but the driver's that fits one of ``shapes``
    (``cpus``/``gpus``/``memory_gb``; ``gpus``: whether a GPU shape fits it), as a task that
    reserves nothing: ``{"<ip> <node id>": problems}``."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    task = ray.remote(num_cpus=0, max_retries=0)(check)
    replies = {}
    for node in ray.nodes():
        have = node["Resources"]
        fitting = [s for s in shapes if not resource_problems(s.cpus, s.gpus, s.memory_gb, [have])]
        if not node.get("Alive") or node["NodeID"] == here or not fitting:
            continue
        where = f"{node['NodeManagerAddress']} {node['NodeID'][:12]}"
        place = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        gpus = any(s.gpus > 0 for s in fitting)
        replies[where] = task.options(scheduling_strategy=place).remote(*args, gpus)
    return {where: ray.get(reply) for where, reply in replies.items()}


def resource_problems(
    cpus: float, gpus: float, memory_gb: float | None = None, nodes: list[dict[str, float]] | None = None
) -> list[str]:
    """Why a trial asking for ``cpus`` CPUs, ``gpus`` GPUs and ``memory_gb`` could never start on
    the running Ray cluster (or on ``nodes``, their resources); empty when it can. A trial runs on
    one node, so the largest node is what counts."""
    if nodes is None:
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    problems = []
    for key, setting, scale, asked, more in (
        (
            "CPU",
            "cpus",
            1,
            cpus,
            "start Ray with more (`ray start --num-cpus N`) or connect to a larger cluster with --address",
        ),
        (
            "GPU",
            "gpus",
            1,
            gpus,
            "start Ray on a machine with GPUs, or connect to a cluster that has them with --address",
        ),
        ("memory", "memory_gb", 2**30, memory_gb or 0, "connect to a cluster with larger nodes with --address"),
    ):
        largest = max((float(node.get(key, 0.0)) / scale for node in nodes), default=0.0)
        if asked <= largest:
            continue
        total = sum(float(node.get(key, 0.0)) / scale for node in nodes)
        unit = "GB of memory" if key == "memory" else key
        has = f"the cluster has {_amount(total, unit)}"
        if total > largest:
            has += f", at most {_amount(largest, unit)} on one node (a trial runs on one node)"
        field = f"resources.{setting}"
        fix = f"set {field}: {largest:.3g} or {more}" if largest > 0 or key == "GPU" else more
        problems.append(f"{field}: each trial asks for {_amount(asked, unit)}; {has}: {fix}")
    return problems


def _amount(count: float, unit: str) -> str:
    plural = "" if count == 1 or unit.startswith("GB") else "s"
    return f"{count:.3g} {unit}{plural}"
