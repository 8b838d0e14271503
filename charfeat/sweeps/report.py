"""A multirun's report, written into its sweep dir:

    report.csv                       every job, every override, every model's metrics
    report.md                        the table (swept overrides, trained metrics ± half their 95 % interval,
                                     which jobs the best cannot be told apart from), as printed
    report_<metric>_vs_<key>.svg     the chosen metric against each swept key (charts.py)
    report.html                      table, charts and each job's ``plots/*.png``, all inline

It imports no torch, so it is quick on a laptop holding a copy of the sweep dir.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from charfeat.sweeps.charts import chart_svg
from charfeat.sweeps.compare import TIED, compare_to_best
from charfeat.sweeps.jobs import (DEFAULT_METRIC, Job, as_float, best_job, collect_jobs, common_overrides,
                                  models_and_metrics, override_keys, swept_keys)

if TYPE_CHECKING:
    from charfeat.sweeps.chart_process import ChartProcess


def _fmt(value: float | None, interval: tuple[float, float] | None = None) -> str:
    """``0.4120``, or ``0.4120 ±0.050`` with half the width of its interval."""
    if value is None:
        return ""
    return f"{value:.4f}" if interval is None else f"{value:.4f} ±{(interval[1] - interval[0]) / 2:#.2g}"


def _short(value: str) -> str:
    """A sampled float (0.32124351923223976) to 4 significant digits for the table; CSV keeps it exact."""
    number = as_float(value) if re.fullmatch(r"[-+]?\d*\.\d{5,}(e[-+]?\d+)?", value) else None
    return value if number is None else f"{number:.4g}"


def table(jobs: list[Job], metric: str, versus: dict[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table: job, status, (the paired comparison with the best job,
    when ``versus`` has one), swept overrides, trained metrics with their intervals."""
    keys = swept_keys(jobs)
    best = best_job(jobs, metric)
    metrics = models_and_metrics(jobs)[1]
    compared = [f"vs best ({metric})"] if versus else []
    header = ["job", "status", *compared, *keys, *metrics]
    rows = []
    for job in jobs:
        status = job.status + (" (best)" if job is best else "")
        rows.append([job.name, status, *([versus.get(job.name, "")] if versus else []),
                     *(_short(job.overrides.get(k, "")) for k in keys),
                     *(_fmt(job.value(m), job.interval(m)) for m in metrics)])
    return header, rows


def format_text(jobs: list[Job], metric: str, versus: dict[str, str] | None = None) -> str:
    header, rows = table(jobs, metric, versus)
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(jobs: list[Job], metric: str, versus: dict[str, str] | None = None) -> str:
    header, rows = table(jobs, metric, versus)
    esc = [[cell.replace("|", "\\|") for cell in line] for line in [header, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(line) + " |" for line in esc[1:]]
    return "\n".join(lines)


def format_csv(jobs: list[Job]) -> str:
    """Every job, override and model metric; each metric's interval ends when some job has them."""
    keys = override_keys(jobs)
    models, metrics = models_and_metrics(jobs)
    bounded = [(model, m) for model in models for m in metrics if any(job.interval(m, model) for job in jobs)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["job", "status", "error", *keys, *(f"{model}/{m}" for model in models for m in metrics),
                     *(f"{model}/{m}_ci95_{end}" for model, m in bounded for end in ("low", "high"))])
    for job in jobs:
        ends = [job.interval(m, model) for model, m in bounded]
        writer.writerow([job.name, job.status, job.error or "", *(job.overrides.get(k, "") for k in keys),
                         *(_fmt(job.value(m, model)) for model in models for m in metrics),
                         *(_fmt(bound) for interval in ends for bound in (interval or (None, None)))])
    return buffer.getvalue()


def format_html(sweep_dir: Path, jobs: list[Job], metric: str, charts: dict[str, str],
                versus: dict[str, str] | None = None) -> str:
    """The page: the table, the charts (SVG documents, inlined) and each job's PNG plots."""
    esc = html.escape
    header, rows = table(jobs, metric, versus)
    failed = sum(job.status == "failed" for job in jobs)
    parts = ["<!doctype html>", '<html><head><meta charset="utf-8">',
             f"<title>sweep {esc(sweep_dir.name)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
             "tr.failed{background:#fdd}tr.best{background:#dfd}tr.tied{background:#efe}"
             "figure{display:inline-block;margin:4px}"
             "img{max-width:560px}figcaption{font-size:12px;color:#555}</style></head><body>",
             f"<h1>Sweep {esc(sweep_dir.name)}</h1>",
             f"<p>{esc(str(sweep_dir.resolve()))}: {len(jobs)} job(s), {failed} failed. "
             f"Written {datetime.now():%Y-%m-%d %H:%M:%S}. Metrics are the trained model's on the "
             f"validation split (± half the width of the 95 % bootstrap interval over its queries); best by "
             f"{esc(metric)}.</p>"]
    if versus:
        parts.append(f"<p>vs best: a paired bootstrap of each job's {esc(metric)} minus the best job's, on the "
                     "same queries; a job is not distinguishable from the best when the 95 % interval of that "
                     "difference contains 0.</p>")
    common = common_overrides(jobs)
    if common:
        parts.append(f"<p>Every job: <code>{esc(' '.join(common))}</code></p>")
    parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for job, row in zip(jobs, rows):
        tied = bool(versus) and versus.get(job.name) == TIED
        css = "failed" if job.status == "failed" else "best" if row[1].endswith("(best)") else "tied" if tied else ""
        title = f' title="{esc(job.error)}"' if job.error else ""
        parts.append(f'<tr class="{css}"{title}>' + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>")
    parts.append("</table>")
    if charts:
        parts.append("<h2>Plots</h2>")
        parts += [f"<div>{svg[svg.index('<svg'):]}</div>" for svg in charts.values()]  # without the XML prolog
    parts.append("<h2>Jobs</h2>")
    for job in jobs:
        overrides = " ".join(job.raw_overrides)
        parts.append(f"<h3>job {esc(job.name)}: {esc(job.status)}</h3><p><code>{esc(overrides)}</code></p>")
        if job.error:
            parts.append(f"<p>{esc(job.error)}</p>")
        if not job.plots:
            parts.append("<p>No plots.</p>")
        for png in job.plots:
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(png.name)}">'
                         f"<figcaption>{esc(png.name)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def chart_name(metric: str, key: str) -> str:
    """``report_<metric>_vs_<key>.svg``, with anything but letters, digits, ``_ . -`` in the key made ``_``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_") or "key"
    return f"report_{metric}_vs_{safe}.svg"


def write_report(sweep_dir: Path | str, metric: str = DEFAULT_METRIC, chart_process: ChartProcess | None = None) -> str:
    """Write report.{csv,md,html} and one SVG per swept key into ``sweep_dir``; return the table text.
    The charts come from ``chart_process`` when it can draw them, else from this process."""
    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no job dirs (with .hydra/overrides.yaml) under {sweep_dir}")
    metrics = models_and_metrics(jobs)[1]
    if metrics and metric not in metrics:
        raise ValueError(f"metric must be one of {metrics}, got {metric!r}")
    versus = compare_to_best(jobs, metric)
    keys = swept_keys(jobs) if len(jobs) > 1 else []
    svgs = chart_process.draw(jobs, keys, metric) if chart_process is not None and keys else None
    charts = dict(zip(keys, svgs or [chart_svg(jobs, key, metric) for key in keys]))
    for key, svg in charts.items():
        (sweep_dir / chart_name(metric, key)).write_text(svg)
    (sweep_dir / "report.csv").write_text(format_csv(jobs))
    (sweep_dir / "report.md").write_text(format_markdown(jobs, metric, versus) + "\n")
    (sweep_dir / "report.html").write_text(format_html(sweep_dir, jobs, metric, charts, versus))
    text = format_text(jobs, metric, versus)
    common = common_overrides(jobs)
    if common:
        text = f"every job: {' '.join(common)}\n{text}"
    return text
