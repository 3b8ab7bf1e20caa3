"""The report's cost table (DOR's training time and memory) from trials recorded, with known
costs, in a real MLflow sqlite store, the way `dor-bench run` records them."""

from __future__ import annotations

import csv
import io

import pyarrow.parquet as pq
import pytest

from orchestrator.report.aggregate import COST, Table, build_tables
from orchestrator.report.build import build_report
from orchestrator.report.collect import collect
from tests.helpers.reports import b2n_metrics, log_trial, spec
from tests.helpers.reports import store as new_store

SECONDS, MEMORY = "Seconds per epoch", "Peak memory (MB)"


def cost(train_seconds: float, epochs: int, memory: float, device: str = "GPU-A") -> dict[str, object]:
    """A trial's info as run_trial records it: ``epochs`` trained in its run."""
    return {
        "seconds": train_seconds + 5,  # the whole trial: not what the table reads
        "train_seconds": train_seconds,
        "train_epochs_run": epochs,
        "peak_memory_mb": memory,
        "device_name": device,
    }


# (method, lambda or None, dataset, seed) -> the trial's info
TRIALS = {
    ("coop", None, "imagenet", 1): cost(20, 10, 1000),  # 2.0 s per epoch
    ("coop", None, "imagenet", 2): cost(24, 10, 1100),  # 2.4
    ("coop", 8.0, "imagenet", 1): cost(30, 10, 1500),  # 3.0
    ("coop", 8.0, "imagenet", 2): cost(33, 10, 1700),  # 3.3
    ("coop", 8.0, "imagenet", 3): cost(12, 4, 1600),  # resumed: 4 of its 10 epochs in this run, 3.0
    ("coop", None, "caltech101", 1): {},  # recorded before trials kept their cost
    ("kgcoop", None, "imagenet", 1): cost(10, 5, 900),  # never run with DOR
    ("cocoop", None, "imagenet", 1): cost(40, 10, 2000, "GPU-A"),  # 4.0
    ("cocoop", None, "imagenet", 2): cost(10, 10, 3000, "GPU-B"),  # 1.0, on another device
    ("maple", None, "imagenet", 1): cost(20, 10, 1000),  # 2.0
    ("maple", None, "caltech101", 1): cost(10, 10, 500),  # 1.0
    ("maple", 2.0, "imagenet", 1): cost(30, 10, 1200),  # 3.0; no caltech101 with DOR
    ("zeroshot", None, "imagenet", 1): {"seconds": 3.0, "peak_memory_mb": 700.0, "device_name": "GPU-A"},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cost-store")
    uri, tracker = new_store(folder, "cost")
    parent = tracker.start_parent("run", {})
    for (method, lam, dataset, seed), info in TRIALS.items():
        log_trial(tracker, parent, spec(method, dataset, seed, lam), b2n_metrics(70, 60, 3, 9), info=info)
    tracker.end_parent(parent, "FINISHED")
    return uri


@pytest.fixture(scope="module")
def table(store) -> Table:
    return next(t for t in build_tables(collect(store, "cost")).tables if t.key == COST)


def test_seconds_per_epoch_and_memory_with_and_without_dor_by_hand(table):
    assert table.rows == [
        "CoOp on GPU-A",
        "CoCoOp on GPU-A",
        "CoCoOp on GPU-B",
        "KgCoOp on GPU-A",
        "MaPLe on GPU-A",
    ]  # zero-shot trains nothing: no row
    without, with_dor = (table.cell("CoOp on GPU-A", SECONDS, sub) for sub in ("without DOR", "with DOR"))
    assert (without.mean, without.n) == (pytest.approx((2.0 + 2.4) / 2), 2)
    # the resumed trial: 12 s over the 4 epochs it trained (12 / 10 would make 2.5)
    assert (with_dor.mean, with_dor.n) == (pytest.approx((3.0 + 3.3 + 3.0) / 3), 3)
    assert with_dor.std == pytest.approx(0.03**0.5)  # sample std of 3.0, 3.3, 3.0
    ratio = table.cell("CoOp on GPU-A", SECONDS, "ratio")
    assert (ratio.mean, ratio.n, ratio.datasets) == (pytest.approx(3.1 / 2.2), 5, (1, 1))
    memory = [table.cell("CoOp on GPU-A", MEMORY, sub).mean for sub in ("without DOR", "with DOR", "ratio")]
    assert memory == [1050, 1600, pytest.approx(1600 / 1050)]
    assert any("1 finished trials of methods that train recorded no training cost" in n for n in table.notes)


def test_a_method_run_without_dor_only_shows_blanks_for_the_other_side(table):
    row = table.cells[table.rows.index("KgCoOp on GPU-A")]
    assert [s.mean for s in row] == [2.0, None, None, 900.0, None, None]


def test_trials_on_different_devices_are_never_averaged_together(table):
    a, b = (table.cell(f"CoCoOp on {d}", SECONDS, "without DOR") for d in ("GPU-A", "GPU-B"))
    assert (a.mean, a.n, b.mean, b.n) == (4.0, 1, 1.0, 1)  # not one 2.5 over both
    assert table.cell("CoCoOp on GPU-B", MEMORY, "without DOR").mean == 3000


def test_the_ratio_compares_only_the_datasets_both_sides_ran(table):
    without = table.cell("MaPLe on GPU-A", SECONDS, "without DOR")
    assert (without.mean, without.n) == (1.5, 2)  # ImageNet and Caltech101
    ratio = table.cell("MaPLe on GPU-A", SECONDS, "ratio")
    assert (ratio.mean, ratio.n, ratio.datasets, ratio.complete) == (3.0 / 2.0, 2, (1, 2), False)  # ImageNet only


def test_rendered_in_every_format_with_the_device_columns_in_parquet(store, tmp_path):
    out = build_report(store, "cost", out_dir=tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## DOR's cost: training seconds per epoch and peak memory" in md
    assert (
        "| CoOp on GPU-A | 2.20 ± 0.28 (2) | 3.10 ± 0.17 (3) | 1.41 (5) | 1050.00 ± 70.71 (2) "
        "| 1600.00 ± 100.00 (3) | 1.52 (5) |"
    ) in md
    assert "| KgCoOp on GPU-A | 2.00 (1) | – | – | 900.00 (1) | – | – |" in md
    assert "| MaPLe on GPU-A | 1.50 ± 0.71 (2) | 3.00 (1) | 1.50 (2) ‡1/2 |" in md
    assert "DOR's cost" not in out.terminal.split("Full report")[0]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "tables.csv").read_text())))
    cell = next(
        r
        for r in rows
        if (r["table"], r["row"], r["group"], r["column"]) == (COST, "CoOp on GPU-A", SECONDS, "with DOR")
    )
    assert (float(cell["mean"]), cell["n"]) == (pytest.approx(3.1), "3")
    tex = (tmp_path / "report.tex").read_text()
    assert "CoOp on GPU-A & 2.20{\\scriptsize$\\pm$0.28}$^{2}$" in tex and "\\label{tab:cost}" in tex
    assert "KgCoOp on GPU-A & 2.00$^{1}$ & -- & --" in tex
    assert 'id="cost"' in (tmp_path / "report.html").read_text()
    results = pq.read_table(tmp_path / "results.parquet")
    recorded = dict(zip(results.column("trial").to_pylist(), results.column("device_name").to_pylist()))
    assert recorded["cocoop/imagenet/seed2"] == "GPU-B" and recorded["coop/caltech101/seed1"] is None
    assert results.column("train_epochs_run").drop_null().to_pylist().count(4.0) == 1
