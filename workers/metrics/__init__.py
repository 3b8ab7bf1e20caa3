"""Calibration metrics (ECE, ACE, MCE, PIECE, NLL, reliability bins, per-class stats)."""

from workers.metrics import calibration
from workers.metrics.calibration import *  # noqa: F403

__all__ = calibration.__all__
