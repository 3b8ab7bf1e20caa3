"""Ray start-up for the driver: a cluster from ``--address`` or ``$RAY_ADDRESS``, else a local Ray;
and what that cluster can place."""

from __future__ import annotations

import logging
import os

import ray


def start_ray(address: str | None) -> None:
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    ray.init(
        address=address,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        configure_logging=True,
    )


def resource_problems(cpus: float, gpus: float) -> list[str]:
    """Why a trial asking for ``cpus`` CPUs and ``gpus`` GPUs could never start on the running Ray
    cluster; empty when it can. A trial runs on one node, so the largest node is what counts."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    problems = []
    for key, asked, more in (
        ("CPU", cpus, "start Ray with more (`ray start --num-cpus N`) or connect to a larger cluster with --address"),
        ("GPU", gpus, "start Ray on a machine with GPUs, or connect to a cluster that has them with --address"),
    ):
        largest = max((float(node.get(key, 0.0)) for node in nodes), default=0.0)
        if asked <= largest:
            continue
        total = sum(float(node.get(key, 0.0)) for node in nodes)
        field = f"resources.{key.lower()}s"
        has = f"the cluster has {_amount(total, key)}"
        if total > largest:
            has += f", at most {_amount(largest, key)} on one node (a trial runs on one node)"
        fix = f"set {field}: {largest:g} or {more}" if largest > 0 or key == "GPU" else more
        problems.append(f"{field}: each trial asks for {_amount(asked, key)}; {has}: {fix}")
    return problems


def _amount(count: float, unit: str) -> str:
    return f"{count:g} {unit}{'' if count == 1 else 's'}"
