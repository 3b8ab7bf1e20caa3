"""Calibration metrics (ECE, ACE, MCE, PIECE, NLL, reliability bins, per-class stats)."""

from workers.metrics.calibration import (
    ace,
    calibration_report,
    ece,
    equal_mass_bin_index,
    equal_width_bin_index,
    harmonic_mean,
    mce,
    per_class_stats,
    piece,
    proximity_scores,
    reliability_bins,
    top1,
)

__all__ = [
    "ace",
    "calibration_report",
    "ece",
    "equal_mass_bin_index",
    "equal_width_bin_index",
    "harmonic_mean",
    "mce",
    "per_class_stats",
    "piece",
    "proximity_scores",
    "reliability_bins",
    "top1",
]
