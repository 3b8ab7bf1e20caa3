"""The end of a sweep: trials ranked from their MLflow records, the best configuration, plots of
the objective against lambda and B, and how to run the best configuration on the test split."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.report.plots import plt
from orchestrator.secrets import redact
from orchestrator.settings.fields import DorSection
from orchestrator.settings.sweep import Sweep
from orchestrator.tracking import BEST_TRIAL, LEAKY, TRIAL_STATUS, TUNE_TRIAL, Tracker
from orchestrator.translate.flags import flags_from_spec
from orchestrator.translate.sweeps import spec_from_sweep, spec_from_tune

SHOWN_METRICS = (
    ("val/pseudo_base/acc", "pb acc"),
    ("val/pseudo_new/acc", "pn acc"),
    ("val/pseudo_new/ece", "pn ECE"),
    ("val/hm", "val HM"),
)
KNOB_LABELS = {"lam": "lambda", "outliers_per_step": "B", "pool_size": "K", "pool_strategy": "pool"}


@dataclass
class Row:
    """One recorded sweep trial."""

    trial_id: str
    config: dict[str, Any]
    status: str  # completed | early-stopped | errored
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def objective(self) -> float | None:
        return self.metrics.get("objective")

    @property
    def floor_met(self) -> bool:
        return self.metrics.get("floor_met", 0.0) == 1.0


def ranked(sweep: Sweep, runs: list) -> list[Row]:
    """Trials best first: completed before early-stopped before errored; within each, the ones
    that meet the floor first, then by the objective (in the sweep's direction)."""

    rows = [
        Row(
            r.data.tags[TUNE_TRIAL],
            {k.removeprefix("tune."): yaml.safe_load(v) for k, v in r.data.params.items() if k.startswith("tune.")},
            r.data.tags.get(TRIAL_STATUS, "errored"),
            dict(r.data.metrics),
        )
        for r in runs
    ]
    order = {"completed": 0, "early-stopped": 1, "errored": 2}
    sign = 1 if sweep.objective.mode == "min" else -1

    def key(row: Row) -> tuple:
        value = row.objective
        return (
            order.get(row.status, 2),
            value is None,
            not row.floor_met,
            sign * value if value is not None else 0.0,
            row.trial_id,
        )

    return sorted(rows, key=key)


def best_row(rows: list[Row]) -> Row | None:
    """The best completed trial (None when no trial ran to the end)."""
    return rows[0] if rows and rows[0].status == "completed" and rows[0].objective is not None else None


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def table(sweep: Sweep, rows: list[Row]) -> str:
    """A Markdown table of every trial, ranked."""
    keys = list(sweep.space.dimensions())
    head = [
        "rank",
        "trial",
        "status",
        "objective",
        *[KNOB_LABELS.get(k, k.removeprefix("options.")) for k in keys],
        *[label for _, label in SHOWN_METRICS],
        "epochs",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in enumerate(rows, start=1):
        objective = (
            "-"
            if row.objective is None
            else (
                _cell(row.objective)
                if row.floor_met
                else f"floor missed ({_cell(row.metrics.get(sweep.objective.metric))})"
            )
        )
        cells = [
            str(i),
            row.trial_id,
            row.status,
            objective,
            *[_cell(row.config.get(k)) for k in keys],
            *[_cell(row.metrics.get(m)) for m, _ in SHOWN_METRICS],
            _cell(int(row.metrics.get("reports", 0))),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def knob(sweep: Sweep, row: Row, name: str) -> Any:
    """A DOR knob of a trial: its searched value, else the sweep's fixed value."""
    return row.config.get(name, getattr(sweep.fixed_dor, name))


def plot(sweep: Sweep, rows: list[Row], name: str, path: Path) -> Path | None:
    """Objective against one knob (``lam`` or ``outliers_per_step``), completed trials filled,
    early-stopped hollow; trials that missed the floor are left out. None when the knob is unset."""
    points = [
        (x, r) for r in rows if r.objective is not None and r.floor_met and (x := knob(sweep, r, name)) is not None
    ]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    styles: tuple[tuple[str, dict[str, Any]], ...] = (
        ("completed", {"color": "tab:blue"}),
        ("early-stopped", {"facecolors": "none", "edgecolors": "tab:orange"}),
    )
    for status, style in styles:
        xs = [float(x) for x, r in points if r.status == status]
        ys = [float(r.objective or 0.0) for x, r in points if r.status == status]  # filtered: never None
        if xs:
            ax.scatter(xs, ys, label=status, **style)
    xs = [float(x) for x, _ in points]
    if min(xs) > 0 and max(xs) / min(xs) > 8:
        ax.set_xscale("log")
    elif min(xs) == 0 and max(xs) > 0:
        ax.set_xscale("symlog", linthresh=min(x for x in xs if x > 0))
    label = "lambda" if name == "lam" else "B (outliers per step)"
    ax.set(
        xlabel=label,
        ylabel=f"objective: {sweep.objective.metric}",
        title=f"{sweep.name}: {sweep.objective.mode} objective vs {label.split()[0]}",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def best_command(sweep: Sweep, row: Row) -> str:
    """A ``dor-bench trial`` command that runs the best configuration on the real test split
    (the sweep's first seed, out of tuning mode), with every setting spelled out."""
    spec = spec_from_tune(spec_from_sweep(sweep).model_dump(mode="json"), row.config, sweep.seeds[0])
    flags = flags_from_spec(spec.model_copy(update={"validation": None}))
    return " ".join(shlex.quote(p) for p in ["dor-bench", "trial", *flags])


def best_fragment(sweep: Sweep, row: Row) -> str:
    """A benchmark file that runs the best configuration (with and without DOR) on the test
    split over seeds 1 2 3."""
    options = {
        **sweep.method.options,
        **{k.removeprefix("options."): v for k, v in row.config.items() if k.startswith("options.")},
    }
    lam = knob(sweep, row, "lam")
    bench: dict[str, Any] = {
        "name": f"{sweep.name}-best",
        **({"tracking_uri": redact(sweep.tracking_uri, mask=None)} if sweep.tracking_uri else {}),  # no credentials
        "model": {"arch": sweep.model.arch, "pretrained": sweep.model.pretrained},
        **({"data_root": sweep.data_root} if sweep.data_root else {}),
        "datasets": [sweep.dataset],
        "shots": sweep.shots,
        "seeds": [1, 2, 3],
        "methods": [
            {
                "name": sweep.method.name,
                **({"options": options} if options else {}),
                "dor": [False] if not lam else [False, True],
            }
        ],
    }
    if lam:
        # every knob a benchmark's dor: section takes, so none falls back to its default unnoticed
        bench["dor"] = {name: knob(sweep, row, name) for name in DorSection.model_fields} | {"lam": float(lam)}
    return yaml.safe_dump(bench, sort_keys=False)


def report(sweep: Sweep, tracker: Tracker, parent: str, out: Path, source: str) -> int:
    """Print and save the end-of-sweep report; log it to the parent run. 0 when there is a best
    completed trial, else 1."""
    from orchestrator.console import log

    rows = ranked(sweep, [r for r in tracker.children(parent) if TUNE_TRIAL in r.data.tags])
    out.mkdir(parents=True, exist_ok=True)
    leaky = " [LEAKY: scored on the real test split]" if sweep.leaky else ""
    text = [
        f"## Sweep '{sweep.name}': {len(rows)} trials, objective {sweep.objective.describe()}{leaky}",
        "",
        table(sweep, rows),
        "",
    ]
    best = best_row(rows)
    if best is None:
        text.append("No trial ran to the end, so there is no best configuration yet.")
    else:
        config = ", ".join(f"{KNOB_LABELS.get(k, k)}={_cell(v)}" for k, v in best.config.items())
        text += [
            f"Best configuration (trial {best.trial_id}): {config}; objective "
            f"{sweep.objective.metric} = {_cell(best.metrics.get(sweep.objective.metric))}"
            + ("" if best.floor_met else " (NO trial met the floor: this is the least bad)"),
            "",
            "Run it on the test split (one seed):",
            "",
            "    " + best_command(sweep, best),
            "",
            "or over seeds 1 2 3, with and without DOR, as a benchmark file (dor-bench run FILE):",
            "",
            *["    " + line for line in best_fragment(sweep, best).splitlines()],
        ]
        (out / "best-benchmark.yaml").write_text(best_fragment(sweep, best))
    plots = [
        p
        for p in (
            plot(sweep, rows, "lam", out / "objective_vs_lambda.png"),
            plot(sweep, rows, "outliers_per_step", out / "objective_vs_B.png"),
        )
        if p
    ]
    if plots:
        text += ["", "Plots: " + ", ".join(str(p) for p in plots)]
    body = "\n".join(text)
    (out / "report.md").write_text(body + "\n")
    print(body, flush=True)
    client = tracker.client
    for file in sorted(out.iterdir()):
        client.log_artifact(parent, str(file))
    if best is not None and best.objective is not None:
        client.set_tag(parent, BEST_TRIAL, best.trial_id)
        client.log_metric(parent, "best_objective", best.objective)
    if sweep.leaky:
        client.set_tag(parent, LEAKY, "true")
    log(f"[dor-bench] report saved in {out} and logged to the sweep's parent run")
    return 0 if best is not None else 1
