"""`dor-bench report` on a real MLflow sqlite store holding trials with known metrics."""

from __future__ import annotations

import csv
import io
import statistics
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.cli import main
from orchestrator.report.aggregate import build_tables
from orchestrator.report.build import build_report
from orchestrator.report.collect import collect, spec_values
from orchestrator.report.terminal import format_metrics
from tests.helpers.reports import b2n_metrics, log_trial, spec
from tests.helpers.reports import store as new_store

# (dataset, lambda or None for plain CoOp) -> per seed: base acc, new acc, base ECE, new ECE
VALUES = {
    ("imagenet", None): [(71, 60.5, 2.1, 12.0), (72, 63.0, 2.4, 11.0), (73, 61.0, 2.2, 14.0)],
    ("caltech101", None): [(90, 80, 1.0, 5.0), (92, 70, 1.5, 9.0), (91, 90, 2.0, 7.0)],
    ("oxford_pets", None): [(85, 75, 3.0, 10.0), (86, 76, 3.5, 11.0), (87, 77, 4.0, 12.0)],
    ("imagenet", 8.0): [(72, 64, 2.0, 5.0), (73, 65, 2.5, 6.0), (74, 66, 3.0, 4.0)],
    ("caltech101", 8.0): [(91, 85, 1.0, 3.0), (92, 86, 1.2, 3.5), (93, 87, 1.4, 2.5)],
    ("oxford_pets", 8.0): [(86, 78, 3.0, 5.0), (87, 79, 3.2, 5.5)],  # seed 3 FAILS
    ("imagenet", 2.0): [(70, 62, 2.0, 8.0)],  # one seed only
}
COLUMN = {None: "CoOp", 8.0: "CoOp+DOR(λ=8)", 2.0: "CoOp+DOR(λ=2)"}


def hm(a: float, b: float) -> float:
    return 2 * a * b / (a + b)


def cell(values: list[float], n: int = 3) -> str:
    text = f"{statistics.mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")
    return f"{text} ({len(values)})" if len(values) == n else f"{text} ({len(values)}/{n})†"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report-store")
    uri, tracker = new_store(folder, "calib")
    parent = tracker.start_parent("run test", {})
    log_trial(tracker, parent, spec("coop", "imagenet", 1), b2n_metrics(10, 10, 50, 50))  # superseded
    time.sleep(0.01)
    for (dataset, lam), seeds in VALUES.items():
        for seed, v in enumerate(seeds, start=1):
            log_trial(tracker, parent, spec("coop", dataset, seed, lam), b2n_metrics(*v))
    log_trial(
        tracker,
        parent,
        spec("coop", "oxford_pets", 3, 8.0),
        None,
        error="Traceback (most recent call last):\nRuntimeError: CUDA out of memory",
    )
    tracker.end_parent(parent, "FAILED")
    return uri, folder


@pytest.fixture(scope="module")
def report(store):
    return build_tables(collect(store[0], "calib"))


def test_cells_are_mean_sample_std_and_seed_count_of_the_newest_finished_runs(report):
    acc = next(t for t in report.tables if t.key == "acc")
    assert acc.rows == ["ImageNet", "Caltech101", "OxfordPets", "Average"]
    assert [c.group for c in acc.columns[::3]] == ["CoOp", "CoOp+DOR(λ=2)", "CoOp+DOR(λ=8)"]
    base = [v[0] for v in VALUES[("imagenet", None)]]  # the superseded run (base acc 10) is ignored
    s = acc.cell("ImageNet", "CoOp", "base")
    assert (s.mean, s.std, s.n) == (pytest.approx(statistics.mean(base)), pytest.approx(statistics.stdev(base)), 3)
    new = [v[1] for v in VALUES[("imagenet", None)]]
    assert acc.cell("ImageNet", "CoOp", "new").std == pytest.approx(statistics.stdev(new))
    # HM of the seed-mean accuracies (the papers' convention), not the mean of per-seed HMs
    caltech = VALUES[("caltech101", None)]
    hm_cell = acc.cell("Caltech101", "CoOp", "HM")
    assert hm_cell.mean == pytest.approx(hm(91, 80))
    assert round(hm_cell.mean, 2) == 85.15 != round(statistics.mean(hm(b, n) for b, n, *_ in caltech), 2)
    assert hm_cell.std == pytest.approx(statistics.stdev(hm(b, n) for b, n, *_ in caltech))
    ece = next(t for t in report.tables if t.key == "ece")
    avg = ece.cell("ImageNet", "CoOp", "avg")
    assert avg.mean == pytest.approx((statistics.mean([2.1, 2.4, 2.2]) + statistics.mean([12.0, 11.0, 14.0])) / 2)
    assert avg.std == pytest.approx(statistics.stdev([(2.1 + 12) / 2, (2.4 + 11) / 2, (2.2 + 14) / 2]))


def test_average_row_only_over_complete_datasets_and_incomplete_cells_marked(report):
    acc = next(t for t in report.tables if t.key == "acc")
    full = acc.cell("Average", "CoOp", "base")
    assert full.mean == pytest.approx((72 + 91 + 86) / 3) and full.datasets == (3, 3) and full.complete
    per_seed = [
        statistics.mean(VALUES[(d, None)][s][0] for d in ("imagenet", "caltech101", "oxford_pets")) for s in range(3)
    ]
    assert full.std == pytest.approx(statistics.stdev(per_seed))
    part = acc.cell("Average", "CoOp+DOR(λ=8)", "base")  # OxfordPets has 2 of 3 seeds: left out
    assert part.mean == pytest.approx((73 + 92) / 2) and part.datasets == (2, 3) and not part.complete
    hm_avg = acc.cell("Average", "CoOp+DOR(λ=8)", "HM")
    assert hm_avg.mean == pytest.approx(hm((73 + 92) / 2, (65 + 86) / 2))
    pets = acc.cell("OxfordPets", "CoOp+DOR(λ=8)", "base")  # the FAILED seed is not averaged in
    assert (pets.mean, pets.n, pets.expected, pets.complete) == (86.5, 2, 3, False)
    assert acc.cell("Average", "CoOp+DOR(λ=2)", "base").mean is None


def test_markdown_to_the_digit(report):
    from orchestrator.report.render import markdown

    md = markdown(report)
    row = next(line for line in md.splitlines() if line.startswith("| ImageNet |") and "HM" not in line)
    imagenet = VALUES[("imagenet", None)]
    assert row.startswith(
        f"| ImageNet | 72.00 ± 1.00 (3) | {cell([v[1] for v in imagenet])} | "
        f"{hm(72, 61.5):.2f} ± {statistics.stdev(hm(b, n) for b, n, *_ in imagenet):.2f} (3) |"
    )
    assert "| 70.00 (1/3)† |" in row  # one seed of three
    assert "**73.00 ± 1.00** (3)" in row  # best base accuracy on ImageNet
    pets = next(line for line in md.splitlines() if line.startswith("| OxfordPets |"))
    assert "| 86.50 ± 0.71 (2/3)† |" in pets and "**" not in pets  # best only among complete cells
    average = next(line for line in md.splitlines() if line.startswith("| **Average** |"))
    assert "| 83.00 ± 0.88 (3) |" in average and "82.50 ± 1.00 (3) ‡2/3" in average and "| – ‡0/3 |" in average
    ece_row = [line for line in md.splitlines() if line.startswith("| ImageNet |")][1]
    assert "**5.00 ± 1.00** (3)" in ece_row  # lowest new ECE is best
    assert "Failed and unfinished trials (1, not in the tables)" in md
    failed = next(line for line in md.splitlines() if "FAILED" in line and "|" in line)
    assert "coop+dor/oxford_pets/seed3" in failed and "RuntimeError: CUDA out of memory" in failed
    assert "1 older finished runs of the same trials ignored" in md


def test_formats_and_parquet_via_the_cli(store, tmp_path, capsys):
    uri, _ = store
    out = tmp_path / "out"
    assert (
        main(["report", "--tracking-uri", uri, "--experiment", "calib", "--out", str(out), "--format", "md,latex,csv"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "| ImageNet | 72.00 ± 1.00 (3) |" in printed and "## ECE, base-to-new" in printed
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "report.tex", "results.parquet", "tables.csv"]
    tex = (out / "report.tex").read_text()
    assert "\\toprule" in tex and "\\multicolumn{3}{c}{CoOp+DOR($\\lambda$=8)}" in tex
    assert "\\textbf{73.00}{\\scriptsize$\\pm$1.00}$^{3}$" in tex and "\\bottomrule" in tex
    rows = list(csv.DictReader(io.StringIO((out / "tables.csv").read_text())))
    pets = next(
        r
        for r in rows
        if (r["table"], r["row"], r["group"], r["column"]) == ("acc", "OxfordPets", "CoOp+DOR(λ=8)", "base")
    )
    assert (float(pets["mean"]), pets["n"], pets["expected"], pets["complete"]) == (86.5, "2", "3", "0")
    table = pq.read_table(out / "results.parquet")
    assert table.num_rows == 20 and sorted(set(table.column("status").to_pylist())) == ["FAILED", "FINISHED"]
    assert table.schema.field("seed").type == pa.int64() and table.schema.field("dor.lam").type == pa.float64()
    assert table.schema.field("base/acc").type == pa.float64() and table.schema.field("dor").type == pa.bool_()
    assert build_tables(table).tables[0].cell("Average", "CoOp", "base").mean == pytest.approx(83.0)


def test_planned_but_missing_trials_make_cells_incomplete(store):
    planned = [spec_values(spec("coop", "dtd", seed)) for seed in (1, 2, 3)]
    report = build_tables(collect(store[0], "calib"), planned)
    acc = report.tables[0]
    assert "DTD" in acc.rows and acc.cell("DTD", "CoOp", "base").n == 0
    assert acc.cell("Average", "CoOp", "base").datasets == (3, 4)
    assert sum(f.status == "NOT RUN" for f in report.failures) == 3


def test_user_mistakes_are_one_paragraph(store, tmp_path, capsys):
    uri, _ = store
    assert main(["report", "--tracking-uri", uri, "--experiment", "calibb"]) == 2
    err = capsys.readouterr().err
    assert "No experiment 'calibb'" in err and "Did you mean 'calib'?" in err and "Traceback" not in err
    assert main(["report", "--tracking-uri", uri, "--format", "md,pdf", "--out", str(tmp_path)]) == 2
    assert "Unknown report format 'pdf'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["report", "--tracking-uri", uri, "--out", str(blocker / "sub")]) == 2
    assert "Cannot write the report to" in capsys.readouterr().err
    assert main(["report", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "No MLflow store at" in capsys.readouterr().err
    new_store(store[1], "empty")
    assert main(["report", "--tracking-uri", uri, "--experiment", "empty"]) == 2
    err = capsys.readouterr().err
    assert "Experiment 'empty'" in err and "has no trial runs" in err


PAPER = [
    "imagenet",
    "caltech101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "food101",
    "fgvc_aircraft",
    "sun397",
    "dtd",
    "eurosat",
    "ucf101",
]
TARGETS = ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]


def test_published_comparison_and_domain_shift(tmp_path):
    uri, tracker = new_store(tmp_path, "paper")
    parent = tracker.start_parent("run", {})
    for d in PAPER:
        log_trial(tracker, parent, spec("coop", d, 1, shots=16), b2n_metrics(80, 70, 3.0, 14.0))
        log_trial(tracker, parent, spec("coop", d, 1, 8.0, shots=16), b2n_metrics(80, 75, 2.5, 6.0))
    log_trial(tracker, parent, spec("cocoop", "imagenet", 1), b2n_metrics(80, 75, 2.5, 6.0))
    for seed, ece in ((1, 7.0), (2, 8.0)):
        metrics = {
            "base/acc": 71.0,
            "base/ece": 2.0,
            "target/avg/acc": 60.0,
            "target/avg/ece": ece,
            **{f"target/{t}/acc": 60.0 for t in TARGETS},
            **{f"target/{t}/ece": ece for t in TARGETS},
        }
        log_trial(tracker, parent, spec("coop", "imagenet", seed, subsample="all", targets=TARGETS), metrics)
    report = build_tables(collect(uri, "paper"))
    got = {(c.variant, c.metric): (round(c.ours.mean, 2), c.published, round(c.delta, 2)) for c in report.comparisons}
    assert got[("CoOp", "ECE new")] == (14.0, 14.58, -0.58)
    assert got[("CoOp+DOR", "ECE avg")] == (4.25, 4.58, -0.33)
    assert got[("CoOp", "Accuracy HM")] == (round(hm(80, 70), 2), 72.36, round(hm(80, 70) - 72.36, 2))
    assert got[("CoOp", "ECE target avg (domain shift)")] == (7.5, 7.18, 0.32)
    assert not any(v.startswith("CoCoOp") for v, _ in got)  # one dataset of 11: no comparison
    shift = next(t for t in report.tables if t.key == "shift/imagenet")
    assert [c.group for c in shift.columns[::2]] == [
        "ImageNet (source)",
        "ImageNet-V2",
        "ImageNet-Sketch",
        "ImageNet-A",
        "ImageNet-R",
        "Target avg",
    ]
    s = shift.cell("CoOp", "Target avg", "ECE")
    assert (s.mean, s.std, s.n) == (7.5, pytest.approx(statistics.stdev([7.0, 8.0])), 2)


def test_run_report_end_to_end_writes_every_format(store, tmp_path):
    out = build_report(store[0], "calib", out_dir=tmp_path / "r")
    assert {p.name for p in out.files.values()} == {
        "results.parquet",
        "report.md",
        "report.tex",
        "tables.csv",
        "report.html",
    }
    assert "## Accuracy, base-to-new" in out.terminal and "ACE" not in out.terminal.split("Full report")[0]


def test_a_post_hoc_calibrated_twin_is_its_own_column(tmp_path):
    """Trials rescored with temperature scaling (``posthoc/temperature/*``) also fill a ``+TS``
    column from those metrics; their own column keeps the uncalibrated values."""
    uri, tracker = new_store(tmp_path, "ts")
    parent = tracker.start_parent("run", {})
    for seed, (ece, cooled) in enumerate([(10.0, 4.0), (12.0, 6.0)], start=1):
        metrics = b2n_metrics(70, 60, ece, ece + 5)
        metrics.update({f"posthoc/temperature/{k}": v for k, v in b2n_metrics(70, 60, cooled, cooled).items()})
        log_trial(tracker, parent, spec("coop", "imagenet", seed), metrics)
    ece = next(t for t in build_tables(collect(uri, "ts")).tables if t.key == "ece")
    assert [c.group for c in ece.columns[::3]] == ["CoOp", "CoOp+TS"]
    assert ece.cell("ImageNet", "CoOp", "base").mean == pytest.approx(11.0)
    assert ece.cell("ImageNet", "CoOp+TS", "base").mean == pytest.approx(5.0)
    assert ece.cell("ImageNet", "CoOp+TS", "new").n == 2


def test_a_trials_terminal_table_keeps_every_header_apart_and_each_value_under_it():
    metrics = {"base/acc": 91.67, "base/mce": 47.7, "base/mce_weighted": 2.52, "new/acc": 83.33, "hm": 87.3}
    header, base, new, hm = format_metrics(metrics).splitlines()
    assert header.split() == ["acc", "mce", "mce_weighted"]
    assert base.split() == ["base", "91.67", "47.70", "2.52"] and new.split() == ["new", "83.33", "-", "-"]
    for name, value in zip(header.split(), base.split()[1:]):  # right-aligned: each value ends where its header ends
        assert header.index(name) + len(name) == base.index(value) + len(value)
    assert hm == "HM of base and new accuracy: 87.30"
