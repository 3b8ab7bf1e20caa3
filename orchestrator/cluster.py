"""Ray start-up for the driver: a cluster from ``--address`` or ``$RAY_ADDRESS``, else a local Ray."""

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
