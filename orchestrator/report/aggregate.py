"""Results table (orchestrator/report/collect.py) -> the papers' tables, as plain data for the renderers.

Rules (also in README "Reports"):
- A *column group* is one configuration: every spec field except dataset and seed. Trials that
  differ in anything else (lambda, shots, an option) are never averaged together; groups of the
  same method get the differing fields in their label, e.g. ``CoOp+DOR(λ=8)``.
- A *cell* is one dataset x column group: the newest FINISHED run per seed; FAILED, KILLED and
  RUNNING runs are never averaged in, and are listed when their trial has no finished run.
- Cell value: mean over seeds, +- the sample std (n-1) of the per-seed values, and the seed count.
  HM is the harmonic mean of the seed-mean base and new accuracies (the papers' convention, also
  for the Average row); its spread is the std of the per-seed HMs. ECE avg = (base + new) / 2.
- Expected seeds: every seed that appears in the table's trials (any status) or in the run's
  plan. A cell with fewer finished seeds is incomplete (marked, never hidden).
- Average row: the mean over the datasets whose cell is complete for that column; its spread is
  the std over seeds of the per-seed dataset averages. Fewer datasets than rows is marked.
- The best complete cell per (row, metric) across column groups (base-to-new) or per column
  across methods (domain shift) is flagged; higher is better for accuracy, lower for calibration errors.
- Cost table: per configuration (its DOR settings aside) and device, the mean over the newest
  finished trials of their training seconds per epoch trained in that run and their peak memory,
  without DOR, with it, and the ratio over the datasets both sides ran. Trials on different
  devices are never averaged together; zero-shot trials (no training) are left out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, NamedTuple

import pyarrow as pa
import yaml

from orchestrator.report.collect import CALIBRATOR, DEVICE, DOR, metric_columns, spec_columns
from orchestrator.tracking import PEAK_MEMORY_MB, TRAIN_EPOCHS, TRAIN_SECONDS
from workers.catalog import BY_NAME, POSTHOC, TABLES
from workers.methods import METHODS
from workers.spec import LEGACY_PROTOCOL, PROTOCOL

FINISHED = "FINISHED"
AVERAGE = "Average"
SHORT = {
    "dor.lam": "λ",
    "dor.pool_size": "K",
    "dor.outliers_per_step": "B",
    "dor.pool_strategy": "pool",
    "dor.vocabulary": "vocabulary",
    "dor.resample": "resample",
}


@lru_cache(maxsize=1)
def paper() -> dict[str, Any]:
    """Layout and published numbers of the calibration papers (orchestrator/report/paper.yaml)."""
    return yaml.safe_load(resources.files("orchestrator.report").joinpath("paper.yaml").read_text())


# --------------------------------------------------------------------------- the table model


class Stat(NamedTuple):
    """One table cell: mean +- sample std over ``n`` of ``expected`` seeds (a tuple: tens of
    thousands are made per report)."""

    mean: float | None
    std: float | None
    n: int
    expected: int
    datasets: tuple[int, int] | None = None  # Average cells: (datasets averaged, dataset rows)
    best: bool = False

    @property
    def complete(self) -> bool:
        return (
            self.mean is not None
            and self.n >= self.expected
            and (self.datasets is None or self.datasets[0] == self.datasets[1])
        )


@dataclass(frozen=True)
class Column:
    group: str  # the column group's label (a method variant, or a dataset in domain shift)
    sub: str  # e.g. "base", "HM", "ECE"
    key: str  # "<table>/<sub>" in base-to-new, "<acc|ece>/<source|target name|target_avg>"
    higher_is_better: bool


@dataclass
class Table:
    key: str
    title: str
    rows: list[str]
    columns: list[Column]
    cells: list[list[Stat]]  # [row][column]
    notes: list[str] = field(default_factory=list)

    def cell(self, row: str, group: str, sub: str) -> Stat:
        col = next(i for i, c in enumerate(self.columns) if c.group == group and c.sub == sub)
        return self.cells[self.rows.index(row)][col]


@dataclass(frozen=True)
class Variant:
    """A column group: one configuration of a method."""

    label: str
    method: str
    dor: bool
    settings: tuple[tuple[str, Any], ...]  # every spec field except dataset and seed


@dataclass(frozen=True)
class Failure:
    trial: str
    dataset: str
    variant: str
    seed: int | None
    status: str  # FAILED, KILLED, RUNNING, or NOT RUN (planned, no run recorded)
    error: str
    run_id: str | None


@dataclass(frozen=True)
class Comparison:
    variant: str
    metric: str
    ours: Stat
    published: float

    @property
    def delta(self) -> float:
        return (self.ours.mean or 0.0) - self.published


@dataclass
class Report:
    experiment: str
    tables: list[Table]
    variants: list[Variant]
    comparisons: list[Comparison]
    comparison_notes: list[str]
    failures: list[Failure]
    counts: dict[str, int]
    cells: dict[tuple[str, str, str], dict[int, str]]  # (kind, dataset, variant) -> seed -> run_id


# --------------------------------------------------------------------------- statistics


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1; None below two values)."""
    if not values:
        return None, None
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum([(v - m) ** 2 for v in values]) / (len(values) - 1))


Combine = Callable[..., float]


def harmonic_mean(a: float, b: float) -> float:
    """``2ab / (a + b)``, as workers.metrics.harmonic_mean (which would import torch here)."""
    return 0.0 if a + b == 0 else 2.0 * a * b / (a + b)


def _ident(x: float) -> float:
    return x


def _avg(a: float, b: float) -> float:
    return (a + b) / 2


@dataclass(frozen=True)
class Measure:
    """A cell's quantity: metric components per seed and how they combine into one number."""

    components: tuple[str, ...]
    combine: Combine = _ident

    def cell(self, seeds: dict[int, dict[str, float]], expected: int) -> tuple[Stat, dict[int, list[float]]]:
        """The cell's Stat, and the per-seed component values behind it."""
        per_seed: dict[int, list[float]] = {}
        for seed, metrics in seeds.items():
            values = [v for c in self.components if (v := metrics.get(c)) is not None]
            if len(values) == len(self.components):
                per_seed[seed] = values
        if not per_seed:
            return Stat(None, None, 0, expected), {}
        rows = list(per_seed.values())
        if self.combine is _ident:
            mean, std = mean_std([v[0] for v in rows])
            return Stat(mean, std, len(rows), expected), per_seed
        means = [sum(column) / len(rows) for column in zip(*rows)]
        _, std = mean_std([self.combine(*v) for v in rows])
        return Stat(self.combine(*means), std, len(rows), expected), per_seed

    def average(self, cells: list[tuple[Stat, dict[int, list[float]]]], seeds: list[int], rows: int) -> Stat:
        """The Average row over complete cells: combine(dataset-averaged components)."""
        used = [values for stat, values in cells if stat.complete]
        if not used:
            return Stat(None, None, 0, len(seeds), (0, rows))
        # per seed, each component averaged over the datasets; the mean over seeds of those
        seed_means = [[sum(c) / len(used) for c in zip(*(values[s] for values in used))] for s in seeds]
        means = [sum(c) / len(seeds) for c in zip(*seed_means)]
        _, std = mean_std([self.combine(*m) for m in seed_means])
        return Stat(self.combine(*means), std, len(seeds), len(seeds), (len(used), rows))


def b2n_measures(family: str) -> list[tuple[str, Measure]]:
    """The sub-columns of a base-to-new table: Acc base/new/HM, or <error> base/new/avg."""
    if family == "acc":
        return [
            ("base", Measure(("base/acc",))),
            ("new", Measure(("new/acc",))),
            ("HM", Measure(("base/acc", "new/acc"), harmonic_mean)),
        ]
    return [
        ("base", Measure((f"base/{family}",))),
        ("new", Measure((f"new/{family}",))),
        ("avg", Measure((f"base/{family}", f"new/{family}"), _avg)),
    ]


# --------------------------------------------------------------------------- naming and order


def dataset_name(name: str) -> str:
    p = paper()
    return p["datasets"].get(name) or p["targets"].get(name) or name


def dataset_order(names: Iterable[str]) -> list[str]:
    """Paper order first (SPEC section 4), then the rest alphabetically."""
    order = {n: i for i, n in enumerate([*paper()["datasets"], *paper()["targets"]])}
    return sorted(set(names), key=lambda n: (order.get(n, len(order)), n))


def _fmt(value: Any) -> str:
    if value is None:
        return "default"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value)) or "none"
    return str(value)


def _short(key: str) -> str:
    return SHORT.get(key) or key.removeprefix("method_options.")


def name_variants(configs: Iterable[tuple[tuple[str, Any], ...]]) -> dict[tuple, Variant]:
    """A Variant per configuration, labelled ``CoOp+DOR`` or, when several configurations of the
    same method share a table, ``CoOp+DOR(λ=8)`` with the fields that set them apart."""
    methods = paper()["methods"]
    by_base: dict[str, list[tuple]] = defaultdict(list)
    for config in configs:
        d = dict(config)
        suffix = ("+DOR" if d.get(DOR) else "") + (POSTHOC[d[CALIBRATOR]][1] if d.get(CALIBRATOR) else "")
        by_base[methods.get(d["method"], d["method"]) + suffix].append(config)
    out: dict[tuple, Variant] = {}
    for base, group in by_base.items():
        dicts = [dict(c) for c in group]
        keys = sorted({k for d in dicts for k in d})
        differ = [k for k in keys if len({repr(d.get(k)) for d in dicts}) > 1]
        labels: set[str] = set()
        for config, d in zip(group, dicts):
            label = base + (f"({', '.join(f'{_short(k)}={_fmt(d.get(k))}' for k in differ)})" if differ else "")
            while label in labels:
                label += "'"
            labels.add(label)
            out[config] = Variant(label, d["method"], bool(d.get(DOR)), config)
    return out


def _variant_order(v: Variant) -> tuple:
    order = list(paper()["methods"])
    return (order.index(v.method) if v.method in order else len(order), v.method, v.dor, v.label)


# --------------------------------------------------------------------------- building


@dataclass
class _Rows:
    """The results table, de-duplicated and grouped into cells."""

    cells: dict[tuple[str, str, tuple], dict[int, dict[str, float]]]  # (kind, dataset, config) -> seed -> metrics
    run_ids: dict[tuple[str, str, tuple], dict[int, str]]
    seeds: dict[str, set[int]]  # kind -> expected seeds
    datasets: dict[str, set[str]]  # kind -> dataset rows
    configs: dict[str, set[tuple]]  # kind -> column groups
    shift_sources: set[tuple[str, tuple]]  # (source dataset, config) pairs of domain-shift trials
    failures: list[tuple[str, str, tuple, int | None, str, str, str | None, str | None]]
    counts: dict[str, int]
    devices: dict[tuple[str, str, tuple], dict[int, str | None]] = field(default_factory=dict)


def _kind(subsample: str | None) -> str:
    return "base2new" if subsample in (None, "base2new") else "shift"


def _group(table: pa.Table, planned: Sequence[dict[str, Any]]) -> _Rows:
    specs = [c for c in spec_columns(table) if c not in ("seed", "dataset")]
    metrics = metric_columns(table)
    cols = {
        c: table.column(c).to_pylist()
        for c in [*specs, "seed", "dataset", "status", "start_time", "run_id", "trial", "error", *metrics]
    }
    n = table.num_rows

    for c in specs:  # lists (targets) as tuples, so that a configuration is hashable
        if pa.types.is_list(table.schema.field(c).type):
            cols[c] = [None if v is None else tuple(v) for v in cols[c]]
    named: dict[tuple, tuple] = {}

    def pairs(values: tuple) -> tuple:
        if values not in named:
            named[values] = tuple((c, v) for c, v in zip(specs, values) if v is not None)
        return named[values]

    configs = [pairs(v) for v in zip(*(cols[c] for c in specs))]

    newest: dict[tuple, int] = {}
    unfinished: dict[tuple, int] = {}
    rows = _Rows(
        {},
        {},
        defaultdict(set),
        defaultdict(set),
        defaultdict(set),
        set(),
        [],
        {"runs": n, "finished": 0, "older_finished": 0, "failed": 0, "failed_superseded": 0, "older_protocol": 0},
    )
    protocols = table.column("protocol").to_pylist() if "protocol" in table.column_names else [LEGACY_PROTOCOL] * n
    devices = table.column(DEVICE).to_pylist() if DEVICE in table.column_names else [None] * n
    current = [protocols[i] == PROTOCOL for i in range(n)]
    rows.counts["older_protocol"] = current.count(False)
    for i in range(n):
        if not current[i]:  # computed otherwise: never skipped as done, never averaged in
            continue
        kind = _kind(cols["subsample"][i])
        key = (kind, cols["dataset"][i], configs[i], cols["seed"][i])
        _expect(rows, key)
        best = newest if cols["status"][i] == FINISHED else unfinished
        j = best.get(key)
        if j is None or cols["start_time"][i] > cols["start_time"][j]:
            best[key] = i
    for values in planned:
        kind = _kind(values.get("subsample"))
        conf = tuple(
            (c, tuple(v) if isinstance(v := values.get(c), list) else v) for c in specs if values.get(c) is not None
        )
        key = (kind, values["dataset"], conf, values["seed"])
        _expect(rows, key)
        if key not in newest and key not in unfinished:
            rows.failures.append((*key, "NOT RUN", "planned; no run recorded yet", None, None))
    for key, i in newest.items():
        kind, dataset, conf, seed = key
        rows.cells.setdefault((kind, dataset, conf), {})[seed] = {m: cols[m][i] for m in metrics}
        rows.run_ids.setdefault((kind, dataset, conf), {})[seed] = cols["run_id"][i]
        rows.devices.setdefault((kind, dataset, conf), {})[seed] = devices[i]
        for name, (prefix, _) in POSTHOC.items():  # a rescored trial: its calibrated twin is a column too
            if prefix + "base/acc" in cols and cols[prefix + "base/acc"][i] is not None:
                twin = (*conf, (CALIBRATOR, name))
                _expect(rows, (kind, dataset, twin, seed))
                calibrated = {m.removeprefix(prefix): cols[m][i] for m in metrics if m.startswith(prefix)}
                rows.cells.setdefault((kind, dataset, twin), {})[seed] = (
                    calibrated  # no diagram: its run's is uncalibrated
                )
    finished_runs = sum(current[i] and cols["status"][i] == FINISHED for i in range(n))
    rows.counts["finished"] = len(newest)
    rows.counts["older_finished"] = finished_runs - len(newest)
    for key, i in unfinished.items():
        if key in newest:
            continue
        error = (cols["error"][i] or "").strip().splitlines()
        rows.failures.append((*key, cols["status"][i], error[-1] if error else "", cols["run_id"][i], cols["trial"][i]))
    rows.counts["failed"] = sum(1 for f in rows.failures if f[4] != "NOT RUN")
    rows.counts["not_run"] = len(rows.failures) - rows.counts["failed"]
    rows.counts["failed_superseded"] = n - rows.counts["older_protocol"] - finished_runs - rows.counts["failed"]
    return rows


def _expect(rows: _Rows, key: tuple[str, str, tuple, int]) -> None:
    kind, dataset, config, seed = key
    rows.seeds[kind].add(seed)
    rows.datasets[kind].add(dataset)
    rows.configs[kind].add(config)
    if kind == "shift":
        rows.shift_sources.add((dataset, config))


def _mark_best(table: Table, across_rows: bool) -> None:
    """Flag the best complete cell (ties at the printed precision all count) per row and
    sub-column, or per column when ``across_rows``."""
    if across_rows:
        groups = [[(r, c) for r in range(len(table.rows))] for c in range(len(table.columns))]
    else:
        by_sub: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)
        for r in range(len(table.rows)):
            for c, col in enumerate(table.columns):
                by_sub[(r, col.sub)].append((r, c))
        groups = list(by_sub.values())
    for members in groups:
        values = [
            (round(mean, 2), r, c)
            for r, c in members
            if table.cells[r][c].complete and (mean := table.cells[r][c].mean) is not None
        ]
        if len(values) < 2:
            continue
        higher = table.columns[members[0][1]].higher_is_better
        best = max(v for v, _, _ in values) if higher else min(v for v, _, _ in values)
        for v, r, c in values:
            if v == best:
                table.cells[r][c] = table.cells[r][c]._replace(best=True)


def _bins_note(variants: list[Variant]) -> str:
    bins = sorted({b for v in variants if (b := dict(v.settings).get("ece_bins")) is not None})
    return f"{'/'.join(map(str, bins)) or 10} equal-width confidence bins"


def _b2n_tables(rows: _Rows, variants: dict[tuple, Variant]) -> tuple[list[Table], dict]:
    datasets = dataset_order(rows.datasets["base2new"])
    cols = sorted((variants[c] for c in rows.configs["base2new"]), key=_variant_order)
    configs = {v.label: v.settings for v in cols}
    seeds = sorted(rows.seeds["base2new"])
    tables, used = [], {}
    for family in TABLES:
        measures = b2n_measures(family)
        columns = [Column(v.label, sub, f"{family}/{sub}", family == "acc") for v in cols for sub, _ in measures]
        cells: list[list[Stat]] = []
        per_col: list[list[tuple[Stat, dict]]] = [[] for _ in columns]
        by_sub = dict(measures)
        for d in datasets:
            row = []
            for c, col in enumerate(columns):
                stat, values = by_sub[col.sub].cell(rows.cells.get(("base2new", d, configs[col.group]), {}), len(seeds))
                row.append(stat)
                per_col[c].append((stat, values))
            cells.append(row)
        if not any(s.mean is not None for row in cells for s in row):
            continue  # e.g. no run logged PIECE
        average = []
        for c, col in enumerate(columns):
            average.append(by_sub[col.sub].average(per_col[c], seeds, len(datasets)))
            used[(family, col.group, col.sub)] = {d for d, (s, _) in zip(datasets, per_col[c]) if s.complete}
        table = Table(
            family,
            f"{BY_NAME[family].title}, base-to-new",
            [*map(dataset_name, datasets), AVERAGE],
            columns,
            [*cells, average],
            [BY_NAME[family].note.format(bins=_bins_note(cols))],
        )
        _mark_best(table, across_rows=False)
        tables.append(table)
    return tables, used


def _shift_tables(rows: _Rows, variants: dict[tuple, Variant]) -> list[Table]:
    seeds = sorted(rows.seeds["shift"])
    tables = []
    for source in dataset_order(rows.datasets["shift"]):
        configs = [c for c in rows.configs["shift"] if (source, c) in rows.shift_sources]
        cols = sorted((variants[c] for c in configs), key=_variant_order)
        targets = dataset_order({t for v in cols for t in dict(v.settings).get("targets", ())})
        groups = [
            ("source", f"{dataset_name(source)} (source)", "base"),
            *[(t, dataset_name(t), f"target/{t}") for t in targets],
        ]
        if targets:
            groups.append(("target_avg", "Target avg", "target/avg"))
        columns = [
            Column(label, BY_NAME[m].title, f"{m}/{gid}", m == "acc")
            for gid, label, _ in groups
            for m in ("acc", "ece")
        ]
        prefixes = [prefix for _, _, prefix in groups for _ in ("acc", "ece")]
        cells = []
        for v in cols:
            seed_metrics = rows.cells.get(("shift", source, v.settings), {})
            cells.append(
                [
                    Measure((f"{p}/{col.key.split('/')[0]}",)).cell(seed_metrics, len(seeds))[0]
                    for col, p in zip(columns, prefixes)
                ]
            )
        kind = "domain shift" if targets else "all classes"
        table = Table(
            f"shift/{source}",
            f"Accuracy and ECE, {kind}: trained on {dataset_name(source)}",
            [v.label for v in cols],
            columns,
            cells,
            [
                "Source = the source dataset's own test split; Target avg = the mean over the "
                "targets (each scored with its own classes)."
                if targets
                else "Trained and tested on all classes."
            ],
        )
        _mark_best(table, across_rows=True)
        tables.append(table)
    return tables


def _matches(setting: dict[str, Any], variant: Variant, dataset: str | None = None) -> bool:
    values = {**dict(variant.settings), "dataset": dataset}
    return all(values.get(k) == v for k, v in setting.items())


def _compare(tables: list[Table], variants: list[Variant], used: dict) -> tuple[list[Comparison], list[str]]:
    pub = paper()["published"]
    b2n = pub["base2new"]
    eleven = set(paper()["datasets"])
    out, notes = [], []
    by_key = {t.key: t for t in tables}
    for v in variants:
        for entry in b2n["numbers"]:
            if entry["method"] != v.method or entry["dor"] != v.dor or not _matches(b2n["setting"], v):
                continue
            for metric, value in entry.items():
                if "/" not in metric or metric.split("/")[0] not in by_key:
                    continue
                family, sub = metric.split("/")
                if used.get((family, v.label, sub)) == eleven:
                    out.append(
                        Comparison(
                            v.label, f"{BY_NAME[family].title} {sub}", by_key[family].cell(AVERAGE, v.label, sub), value
                        )
                    )
    shift = pub["domain_shift"]
    for t in tables:
        if not t.key.startswith("shift/"):
            continue
        source = t.key.split("/", 1)[1]
        for v in variants:
            if v.label not in t.rows:
                continue
            for entry in shift["numbers"]:
                if entry["method"] != v.method or entry["dor"] != v.dor or not _matches(shift["setting"], v, source):
                    continue
                for metric, value in entry.items():
                    col = next((i for i, c in enumerate(t.columns) if c.key == metric), None)
                    stat = t.cells[t.rows.index(v.label)][col] if col is not None else None
                    if stat is not None and stat.complete:
                        out.append(
                            Comparison(
                                v.label, f"{BY_NAME[metric.split('/')[0]].title} target avg (domain shift)", stat, value
                            )
                        )
    notes.append(
        f"Published: {b2n['source']}; {shift['source']}. Compared only for columns run as "
        f"{', '.join(f'{k}={v}' for k, v in b2n['setting'].items())} whose Average covers "
        "all 11 datasets complete (domain shift: its target average complete)."
    )
    return out, notes


# --------------------------------------------------------------------------- cost

COST = "cost"
#: The cost table's sides: (sub-column, the last part of its column key).
SIDES = (("without DOR", "without"), ("with DOR", "with"), ("ratio", "ratio"))
#: Its quantities: (column group, the first part of its column key).
QUANTITIES = (("Seconds per epoch", "seconds_per_epoch"), ("Peak memory (MB)", "peak_memory_mb"))
Costs = list[tuple[str, tuple[float, float]]]  # per trial: its dataset, (seconds per epoch, MB)


def _trial_cost(metrics: dict[str, float]) -> tuple[float, float] | None:
    """A trial's training seconds per epoch (over the epochs trained in its run) and peak memory
    (MB); None when its run recorded no training (recorded before dor-bench kept it, or resumed
    from a checkpoint of its last epoch)."""
    seconds, epochs, memory = metrics.get(TRAIN_SECONDS), metrics.get(TRAIN_EPOCHS), metrics.get(PEAK_MEMORY_MB)
    if seconds is None or not epochs or memory is None:
        return None
    return seconds / epochs, memory


def _side(costs: Costs, q: int) -> Stat:
    mean, std = mean_std([cost[q] for _, cost in costs])
    return Stat(mean, std, len(costs), len(costs))


def _ratio(plain: Costs, dor: Costs, q: int) -> Stat:
    """With DOR over without, each the mean over its trials of the datasets both sides ran."""
    if not plain or not dor:
        return Stat(None, None, 0, 0)
    ran = [{d for d, _ in costs} for costs in (plain, dor)]
    common, every = ran[0] & ran[1], ran[0] | ran[1]
    if not common:
        return Stat(None, None, 0, 0, (0, len(every)))
    over = [[cost[q] for d, cost in costs if d in common] for costs in (plain, dor)]
    without, with_dor = (sum(values) / len(values) for values in over)
    n = len(over[0]) + len(over[1])
    return Stat(with_dor / without if without else None, None, n, n, (len(common), len(every)))


def _cost_table(rows: _Rows, variants: dict[tuple, Variant]) -> Table | None:
    """DOR's cost: training seconds per epoch and peak memory without DOR, with it and their
    ratio; a row per configuration (DOR aside), DOR variant and device. ``variants``: (kind,
    configuration) -> its column group. None when no trial recorded its training."""
    # (configuration without DOR, device) -> (kind, configuration) with DOR, None without -> costs
    sides: dict[tuple[tuple, str | None], dict[tuple | None, Costs]] = defaultdict(lambda: defaultdict(list))
    unrecorded = 0
    for (kind, dataset, conf), seeds in rows.cells.items():
        settings = dict(conf)
        method = settings["method"]
        if CALIBRATOR in settings or (method in METHODS and not METHODS.get(method).trains):
            continue
        plain = tuple((k, v) for k, v in conf if k != DOR and not k.startswith(DOR + "."))
        twin = (kind, conf) if settings.get(DOR) else None
        for seed, metrics in seeds.items():
            cost = _trial_cost(metrics)
            if cost is None:
                unrecorded += 1
            else:
                sides[(plain, rows.devices[(kind, dataset, conf)][seed])][twin].append((dataset, cost))
    if not sides:
        return None
    names = name_variants({plain for plain, _ in sides})
    twins: dict[tuple, set[tuple]] = defaultdict(set)  # configuration -> its DOR variants (any device)
    for (plain, _), by_dor in sides.items():
        twins[plain].update(k for k in by_dor if k is not None)
    entries: list[tuple[Variant, str, Costs, Costs]] = []  # variant, row label, costs without and with DOR
    for (plain, device), by_dor in sides.items():
        name, on = names[plain], f" on {device or 'a device not recorded'}"
        if not twins[plain]:
            entries.append((name, name.label + on, by_dor[None], []))
        for twin in sorted(twins[plain], key=lambda k: variants[k].label):
            vs = f" vs {variants[twin].label}" if len(twins[plain]) > 1 else ""
            entries.append((name, name.label + vs + on, by_dor[None], by_dor[twin]))
    entries.sort(key=lambda e: (_variant_order(e[0]), e[1]))
    columns = [Column(group, sub, f"{key}/{part}", False) for group, key in QUANTITIES for sub, part in SIDES]
    cells = [
        [stat for q in range(len(QUANTITIES)) for stat in (_side(plain, q), _side(dor, q), _ratio(plain, dor, q))]
        for _, _, plain, dor in entries
    ]
    notes = [
        "Seconds per epoch: each trial's training time (its data loading and set-up included; DOR's "
        "outlier pool, built and cached before training, not) over the epochs it trained in that run "
        "(a trial resumed from a checkpoint: only the epochs after it). Peak memory: on a GPU the "
        "trial's peak of allocated tensor memory (training and scoring); on a CPU the worker "
        "process's peak resident memory over every trial it ran so far. A row per device: costs "
        "measured on different devices are never averaged together."
    ]
    if unrecorded:
        notes.append(
            f"{unrecorded} finished trials of methods that train recorded no training cost (recorded "
            "before dor-bench kept it, or resumed after their last epoch) and are left out."
        )
    return Table(
        COST, "DOR's cost: training seconds per epoch and peak memory", [e[1] for e in entries], columns, cells, notes
    )


def build_tables(table: pa.Table, planned: Sequence[dict[str, Any]] = (), experiment: str | None = None) -> Report:
    """All tables of a results table; ``planned`` (collect.spec_values of the planned specs)
    adds the trials a benchmark intends to run, so missing ones show as incomplete."""
    rows = _group(table, planned)
    variants: dict[tuple, Variant] = {}
    for kind in ("base2new", "shift"):
        variants.update({(kind, c): v for c, v in name_variants(rows.configs[kind]).items()})
    tables: list[Table] = []
    used: dict = {}
    if rows.configs["base2new"]:
        b2n, used = _b2n_tables(rows, {c: variants[("base2new", c)] for c in rows.configs["base2new"]})
        tables += b2n
    if rows.configs["shift"]:
        tables += _shift_tables(rows, {c: variants[("shift", c)] for c in rows.configs["shift"]})
    if (cost := _cost_table(rows, variants)) is not None:
        tables.append(cost)
    ordered = sorted(variants.values(), key=_variant_order)
    comparisons, notes = _compare(tables, ordered, used)
    failures = [
        Failure(
            trial=trial or f"{variants[(kind, conf)].label}/{dataset}/seed{seed}",
            dataset=dataset,
            variant=variants[(kind, conf)].label,
            seed=seed,
            status=status,
            error=error,
            run_id=run_id,
        )
        for kind, dataset, conf, seed, status, error, run_id, trial in rows.failures
    ]
    failures.sort(key=lambda f: (f.status, f.dataset, f.variant, f.seed or 0))
    meta = table.schema.metadata or {}
    name = experiment or meta.get(b"dor_bench.experiment", b"").decode() or "results"
    cells = {(kind, dataset, variants[(kind, conf)].label): ids for (kind, dataset, conf), ids in rows.run_ids.items()}
    return Report(name, tables, ordered, comparisons, notes, failures, rows.counts, cells)


# --------------------------------------------------------------------------- reliability


def pool_reliability(bins: Sequence[dict[str, list[float]]]) -> dict[str, list[float]] | None:
    """Reliability bins of several seeds as one: counts summed, accuracy and confidence
    count-weighted per bin. ``None`` when the seeds' bin edges differ."""
    if not bins or any(b["edges"] != bins[0]["edges"] for b in bins):
        return None
    k = len(bins[0]["count"])
    count = [sum(b["count"][i] for b in bins) for i in range(k)]

    def weighted(name: str) -> list[float]:
        return [sum(b[name][i] * b["count"][i] for b in bins) / count[i] if count[i] else 0.0 for i in range(k)]

    return {
        "edges": list(bins[0]["edges"]),
        "count": count,
        "accuracy": weighted("accuracy"),
        "confidence": weighted("confidence"),
    }
