"""Every metric a trial reports, listed once (torch-free): its name, title, direction and where
it appears. The trial's averages, the terminal and report tables, the sweep's objective check and
the validation metrics all read this catalog, so adding a metric takes a function in
``workers/metrics/calibration.py`` (returned by ``calibration_report``) and one line here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    """One metric of a split (``base/<name>``, ``new/<name>``, ``val/pseudo_new/<name>``, ...)."""

    name: str
    title: str
    note: str  # the report's explanation under its table; "{bins}" becomes the ECE bins
    higher_is_better: bool
    averaged: bool = True  # test results get ``avg/<name>`` = (base + new) / 2, targets a mean
    table: bool = False  # the report has a base-to-new table of its own for it
    proximity: bool = False  # needs base-class reference images (PIECE): test splits only


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo(
        "acc",
        "Accuracy",
        "Top-1 accuracy (%) on base and new classes; HM = harmonic mean of the seed-mean base and new accuracies.",
        higher_is_better=True,
        table=True,
    ),
    MetricInfo(
        "ece",
        "ECE",
        "Expected calibration error (%), {bins}; avg = (base + new) / 2.",
        higher_is_better=False,
        table=True,
    ),
    MetricInfo(
        "ace",
        "ACE",
        "Adaptive calibration error (%), equal-mass bins; avg = (base + new) / 2.",
        higher_is_better=False,
        table=True,
    ),
    MetricInfo(
        "mce",
        "MCE",
        "Maximum calibration error (%), the largest bin gap; avg = (base + new) / 2.",
        higher_is_better=False,
        table=True,
    ),
    MetricInfo(
        "mce_weighted",
        "MCE (DAC)",
        "DAC's maximum calibration error (%), the largest sample-weighted bin gap; avg = (base + new) / 2.",
        higher_is_better=False,
    ),
    MetricInfo(
        "piece",
        "PIECE",
        "Proximity-informed ECE (%), confidence x proximity bins; avg = (base + new) / 2.",
        higher_is_better=False,
        table=True,
        proximity=True,
    ),
    MetricInfo("nll", "NLL", "Negative log-likelihood (nats).", higher_is_better=False, averaged=False),
    MetricInfo("confidence", "Confidence", "Mean top-1 probability (%).", higher_is_better=False, averaged=False),
)
BY_NAME = {m.name: m for m in METRICS}
NAMES = tuple(m.name for m in METRICS)
#: ``avg/<name>`` of the test results (the paper's avg columns).
TEST_AVERAGED = tuple(m.name for m in METRICS if m.averaged)
#: The domain-shift targets' mean ``target/avg/<name>`` (no proximity: targets have no base images).
TARGET_AVERAGED = tuple(m.name for m in METRICS if m.averaged and not m.proximity)
#: What tuning mode scores on validation images, and averages into ``val/avg/<name>``.
VALIDATION = tuple(m.name for m in METRICS if not m.proximity)
#: The report's base-to-new tables, accuracy first.
TABLES = tuple(m.name for m in METRICS if m.table)
#: Post-hoc calibrators (``dor-bench rescore``): name -> (prefix of their metrics, column suffix in
#: the report). A recorded trial scored through one also appears as its own report column.
POSTHOC = {"temperature": ("posthoc/temperature/", "+TS"), "dac": ("posthoc/dac/", "+DAC")}
