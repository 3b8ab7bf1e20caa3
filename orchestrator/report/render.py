"""The table model (orchestrator/report/aggregate.py) as Markdown, LaTeX (booktabs), CSV and one
self-contained HTML file (inline CSS, PNGs embedded as base64, no scripts)."""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence

from orchestrator.report.aggregate import AVERAGE, COST, Report, Stat, Table, Variant

LEGEND = (
    "Cells: mean ± sample std over seeds (n seeds). † incomplete: only n of the N expected "
    "seeds finished. ‡ Average of only the k of K datasets complete for that column. Bold: "
    "best complete cell per dataset and metric across columns (accuracy: highest; calibration "
    "errors: lowest)."
)
SHIFT_LEGEND = (
    "Cells: mean ± sample std over seeds (n seeds). † incomplete: only n of the N "
    "expected seeds finished. Bold: best complete cell per column."
)
COST_LEGEND = (
    "Cells: mean ± sample std over the trials that recorded their training (n trials: seeds and "
    "datasets); –: none. Ratio: with DOR over without DOR, each side's mean over the datasets both "
    "ran (n: the trials behind it); ‡k/K: the two sides ran only k of their K datasets in common."
)


def legend(table: Table) -> str:
    """What a table's cells and marks mean."""
    if table.key == COST:
        return COST_LEGEND
    return SHIFT_LEGEND if table.key.startswith("shift/") else LEGEND


def value_text(stat: Stat) -> str:
    if stat.mean is None:
        return "–"
    return f"{stat.mean:.2f}" + (f" ± {stat.std:.2f}" if stat.std is not None else "")


def count_text(stat: Stat) -> str:
    """``(3)``, ``(2/3)†`` for missing seeds, ``(3) ‡9/11`` for an Average over fewer datasets."""
    seeds = f"({stat.n})" if stat.n >= stat.expected else f"({stat.n}/{stat.expected})†"
    if stat.datasets is not None and stat.datasets[0] < stat.datasets[1]:
        return (seeds + " " if stat.mean is not None else "") + f"‡{stat.datasets[0]}/{stat.datasets[1]}"
    return seeds if stat.mean is not None or stat.expected else ""


def settings_lines(variants: Sequence[Variant]) -> tuple[str, list[tuple[str, str]]]:
    """The settings all columns share, and each column's other settings."""

    def fmt(v: object) -> str:
        if isinstance(v, tuple):
            return "+".join(map(str, v)) or "none"
        return f"{v:g}" if isinstance(v, float) else str(v)

    dicts = [dict(v.settings) for v in variants]
    keys = sorted({k for d in dicts for k in d})
    common = [k for k in keys if all(k in d for d in dicts) and len({repr(d[k]) for d in dicts}) == 1]
    shared = ", ".join(f"{k}={fmt(dicts[0][k])}" for k in common if k not in ("method", "dor")) if dicts else ""
    rest = [
        (v.label, ", ".join(f"{k}={fmt(d[k])}" for k in keys if k in d and k not in common) or "-")
        for v, d in zip(variants, dicts)
    ]
    return shared, rest


def _groups(table: Table) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for col in table.columns:
        if out and out[-1][0] == col.group:
            out[-1] = (col.group, out[-1][1] + 1)
        else:
            out.append((col.group, 1))
    return out


def _first_header(table: Table) -> str:
    return "Method" if table.key.startswith("shift/") or table.key == COST else "Dataset"


# --------------------------------------------------------------------------- Markdown


def _md_cell(stat: Stat) -> str:
    value = value_text(stat)
    value = f"**{value}**" if stat.best else value
    count = count_text(stat)
    return f"{value} {count}".strip().replace("|", "\\|")


def markdown_table(table: Table) -> str:
    header = [_first_header(table), *[f"{c.group} {c.sub}" for c in table.columns]]
    lines = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    for name, row in zip(table.rows, table.cells):
        label = f"**{name}**" if name == AVERAGE else name
        lines.append(f"| {label} | " + " | ".join(_md_cell(s) for s in row) + " |")
    return "\n".join(lines)


def markdown(report: Report, families: Sequence[str] | None = None, files: str | None = None) -> str:
    """The report as Markdown; ``families`` picks tables by key prefix (e.g. the terminal's)."""
    out = [f"# dor-bench report: {report.experiment}", "", _counts_line(report), ""]
    for table in report.tables:
        if families is not None and not any(table.key == f or table.key.startswith(f + "/") for f in families):
            continue
        out += [f"## {table.title}", "", *table.notes, "", markdown_table(table), "", legend(table), ""]
    if report.comparisons:
        out += [
            "## Compared with the published numbers",
            "",
            "| Column | Metric | ours | published | Δ (ours − published) |",
            "|---|---|---|---|---|",
        ]
        out += [
            f"| {c.variant} | {c.metric} | {value_text(c.ours)} ({c.ours.n}) | {c.published:.2f} | {c.delta:+.2f} |"
            for c in report.comparisons
        ]
        out.append("")
    out += [*report.comparison_notes, ""]
    shared, rest = settings_lines(report.variants)
    out += ["## Columns", "", f"All columns: {shared}.", ""] + [f"- **{label}**: {s}" for label, s in rest] + [""]
    out += failures_markdown(report)
    if files:
        out += ["", files]
    return "\n".join(out).rstrip() + "\n"


def _counts_line(report: Report) -> str:
    c = report.counts
    extra = []
    if c.get("older_finished"):
        extra.append(f"{c['older_finished']} older finished runs of the same trials ignored (newest kept)")
    if c.get("older_protocol"):
        extra.append(
            f"{c['older_protocol']} runs of an older protocol left out (computed before "
            f"dor-bench matched the authors' code, docs/fidelity.md; `dor-bench run` "
            f"recomputes them)"
        )
    if c.get("failed_superseded"):
        extra.append(f"{c['failed_superseded']} failed attempts later finished")
    return (
        f"{c['runs']} trial runs: {c['finished']} finished trials in the tables, "
        f"{c['failed']} failed or unfinished and {c.get('not_run', 0)} planned but not run "
        f"(listed below, never averaged in)" + ("; " + "; ".join(extra) if extra else "") + "."
    )


def failures_markdown(report: Report) -> list[str]:
    if not report.failures:
        return ["No failed or unfinished trials."]
    out = [
        f"## Failed and unfinished trials ({len(report.failures)}, not in the tables)",
        "",
        "| Trial | Dataset | Column | Seed | Status | Error | Run |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in report.failures:
        error = f.error.replace("|", "\\|")[:200]
        out.append(f"| {f.trial} | {f.dataset} | {f.variant} | {f.seed} | {f.status} | {error} | {f.run_id or '-'} |")
    return out


# --------------------------------------------------------------------------- LaTeX


def _tex(text: str) -> str:
    text = text.replace("\\", "\\textbackslash{}")
    for char in "&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text.replace("λ", "$\\lambda$").replace("~", "\\textasciitilde{}").replace("±", "$\\pm$")


def _tex_cell(stat: Stat) -> str:
    if stat.mean is None and not stat.expected and stat.datasets is None:  # nothing was expected (a cost side)
        return "--"
    if stat.mean is None:
        return "--" + (
            f"$^{{\\ddagger 0/{stat.datasets[1]}}}$" if stat.datasets else f"$^{{0/{stat.expected}\\dagger}}$"
        )
    value = f"{stat.mean:.2f}"
    value = f"\\textbf{{{value}}}" if stat.best else value
    if stat.std is not None:
        value += f"{{\\scriptsize$\\pm${stat.std:.2f}}}"
    marks = f"{stat.n}" if stat.n >= stat.expected else f"{stat.n}/{stat.expected}\\dagger"
    if stat.datasets is not None and stat.datasets[0] < stat.datasets[1]:
        marks += f",\\ddagger{stat.datasets[0]}/{stat.datasets[1]}"
    return f"{value}$^{{{marks}}}$"


def latex_table(table: Table) -> str:
    groups = _groups(table)
    spec = "l" + "r" * len(table.columns)
    top, rules, start = [], [], 2
    for name, n in groups:
        top.append(f"\\multicolumn{{{n}}}{{c}}{{{_tex(name)}}}")
        rules.append(f"\\cmidrule(lr){{{start}-{start + n - 1}}}")
        start += n
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        "\\resizebox{\\linewidth}{!}{%",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & " + " & ".join(top) + " \\\\",
        " ".join(rules),
        f"{_first_header(table)} & " + " & ".join(_tex(c.sub) for c in table.columns) + " \\\\",
        "\\midrule",
    ]
    for name, row in zip(table.rows, table.cells):
        if name == AVERAGE:
            lines.append("\\midrule")
        lines.append(f"{_tex(name)} & " + " & ".join(_tex_cell(s) for s in row) + " \\\\")
    caption = " ".join([*table.notes, legend(table)])
    caption = _tex(caption.replace("†", "DAGGER").replace("‡", "DDAGGER"))
    caption = caption.replace("DDAGGER", "$^\\ddagger$").replace("DAGGER", "$^\\dagger$")
    lines += [
        "\\bottomrule",
        "\\end{tabular}}",
        f"\\caption{{{_tex(table.title)}. {caption}}}",
        f"\\label{{tab:{table.key.replace('/', '-')}}}",
        "\\end{table}",
    ]
    return "\n".join(lines)


def latex(report: Report) -> str:
    """Every table as a booktabs table environment (needs \\usepackage{booktabs,graphicx})."""
    parts = [f"% dor-bench report: {report.experiment}. Needs \\usepackage{{booktabs,graphicx}}.", ""]
    parts += [latex_table(t) + "\n" for t in report.tables]
    if report.comparisons:
        rows = [
            f"{_tex(c.variant)} & {_tex(c.metric)} & {_tex(value_text(c.ours))} & "
            f"{c.published:.2f} & {c.delta:+.2f} \\\\"
            for c in report.comparisons
        ]
        parts.append(
            "\n".join(
                [
                    "\\begin{table}[t]",
                    "\\centering",
                    "\\small",
                    "\\begin{tabular}{llrrr}",
                    "\\toprule",
                    "Column & Metric & ours & published & $\\Delta$ \\\\",
                    "\\midrule",
                    *rows,
                    "\\bottomrule",
                    "\\end{tabular}",
                    f"\\caption{{{_tex(' '.join(report.comparison_notes))}}}",
                    "\\label{tab:published}",
                    "\\end{table}",
                ]
            )
            + "\n"
        )
    return "\n".join(parts)


# --------------------------------------------------------------------------- CSV


CSV_FIELDS = (
    "table",
    "row",
    "group",
    "column",
    "mean",
    "std",
    "n",
    "expected",
    "complete",
    "best",
    "datasets_used",
    "datasets_total",
)


def csv_text(report: Report) -> str:
    """Every cell of every table, one line each (tidy: easy to filter, pivot and plot)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for t in report.tables:
        for name, row in zip(t.rows, t.cells):
            for col, s in zip(t.columns, row):
                used, total = s.datasets or ("", "")
                writer.writerow(
                    [
                        t.key,
                        name,
                        col.group,
                        col.sub,
                        "" if s.mean is None else repr(s.mean),
                        "" if s.std is None else repr(s.std),
                        s.n,
                        s.expected,
                        int(s.complete),
                        int(s.best),
                        used,
                        total,
                    ]
                )
    return buf.getvalue()


# --------------------------------------------------------------------------- HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d1d1f}
h1{font-size:22px}h2{font-size:18px;margin-top:32px}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0 4px;font-variant-numeric:tabular-nums}
th,td{padding:3px 8px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
thead tr:first-child th{border-bottom:1px solid #999;text-align:center}
thead{border-top:2px solid #333;border-bottom:1px solid #333}
tbody{border-bottom:2px solid #333}tr.avg td{border-top:1px solid #333;font-weight:500}
td.incomplete{background:#fff4e0}td.best{background:#e8f5e9}
.n{color:#777;font-size:11px}.note,.legend{color:#555;max-width:1100px}
.figs{display:flex;flex-wrap:wrap;gap:12px}.fig{border:1px solid #ddd;padding:6px}
.fig img{display:block;max-width:640px}.fig p{margin:2px 0;font-size:12px;color:#555}
"""


def _html_cell(stat: Stat) -> str:
    value = html.escape(value_text(stat))
    value = f"<strong>{value}</strong>" if stat.best else value
    classes = " ".join(c for c, on in (("best", stat.best), ("incomplete", not stat.complete)) if on)
    title = "" if stat.complete else ' title="incomplete: fewer seeds or datasets than expected"'
    return (
        f'<td class="{classes}"{title}>{value} <span class="n">{html.escape(count_text(stat))}</span></td>'
        if classes
        else f'<td>{value} <span class="n">{html.escape(count_text(stat))}</span></td>'
    )


def html_table(table: Table) -> str:
    top = "".join(f'<th colspan="{n}">{html.escape(name)}</th>' for name, n in _groups(table))
    subs = "".join(f"<th>{html.escape(c.sub)}</th>" for c in table.columns)
    body = "".join(
        ('<tr class="avg">' if name == AVERAGE else "<tr>")
        + f"<td>{html.escape(name)}</td>"
        + "".join(_html_cell(s) for s in row)
        + "</tr>"
        for name, row in zip(table.rows, table.cells)
    )
    return (
        f'<table id="{html.escape(table.key)}"><thead><tr><th></th>{top}</tr>'
        f"<tr><th>{_first_header(table)}</th>{subs}</tr></thead><tbody>{body}</tbody></table>"
    )


def html_report(report: Report, figures: dict[str, list[tuple[str, bytes, str]]] | None = None) -> str:
    """The whole report as one HTML file; ``figures``: dataset -> [(column, PNG, caption)]."""
    parts = [
        f"<h1>dor-bench report: {html.escape(report.experiment)}</h1>",
        f'<p class="note">{html.escape(_counts_line(report))}</p>',
    ]
    for t in report.tables:
        parts += [
            f"<h2>{html.escape(t.title)}</h2>",
            *[f'<p class="note">{html.escape(n)}</p>' for n in t.notes],
            html_table(t),
            f'<p class="legend">{html.escape(legend(t))}</p>',
        ]
    if report.comparisons:
        rows = "".join(
            f"<tr><td>{html.escape(c.variant)}</td><td>{html.escape(c.metric)}</td>"
            f"<td>{html.escape(value_text(c.ours))}</td><td>{c.published:.2f}</td>"
            f"<td>{c.delta:+.2f}</td></tr>"
            for c in report.comparisons
        )
        parts += [
            "<h2>Compared with the published numbers</h2>",
            "<table><thead><tr><th>Column</th><th>Metric</th><th>ours</th><th>published</th>"
            f"<th>Δ</th></tr></thead><tbody>{rows}</tbody></table>",
        ]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in report.comparison_notes]
    shared, rest = settings_lines(report.variants)
    parts += [
        "<h2>Columns</h2>",
        f'<p class="note">All columns: {html.escape(shared)}.</p>',
        "<ul>",
        *[f"<li><b>{html.escape(label)}</b>: {html.escape(s)}</li>" for label, s in rest],
        "</ul>",
    ]
    if report.failures:
        rows = "".join(
            f"<tr><td>{html.escape(f.trial)}</td><td>{html.escape(f.status)}</td>"
            f"<td>{html.escape(f.error[:300])}</td><td>{html.escape(f.run_id or '-')}</td></tr>"
            for f in report.failures
        )
        parts += [
            f"<h2>Failed and unfinished trials ({len(report.failures)}, not in the tables)</h2>",
            "<table><thead><tr><th>Trial</th><th>Status</th><th>Error</th><th>Run</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>",
        ]
    if figures:
        parts.append(
            "<h2>Reliability diagrams (seeds pooled: bin counts summed, accuracy and confidence count-weighted)</h2>"
        )
        for dataset, figs in figures.items():
            parts.append(f'<h3>{html.escape(dataset)}</h3><div class="figs">')
            parts += [
                f'<div class="fig"><img alt="{html.escape(col)}" src="data:image/png;base64,'
                f'{base64.b64encode(png).decode()}"><p>{html.escape(caption)}</p></div>'
                for col, png, caption in figs
            ]
            parts.append("</div>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>dor-bench report: {html.escape(report.experiment)}</title><style>{CSS}</style>"
        "</head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
