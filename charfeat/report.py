"""A multirun's results as one table, plots of a metric against each swept value, and an HTML page.

    python -m charfeat.report outputs/train/multiruns/<date_time>
    python -m charfeat.report <sweep dir> --metric precision_at_1

Every job dir under the sweep dir (a dir holding ``.hydra/overrides.yaml``) is one row: its
overrides, and the metrics from its ``metrics.json``; a job without metrics.json is listed as
failed, never dropped. Writes into the sweep dir:

    report.csv                       every job, every override, every model's metrics
    report.md                        the table (swept overrides, trained metrics), as printed
    report_<metric>_vs_<key>.svg     the chosen metric against each swept key
    report.html                      table, plots and each job's ``plots/*.png``, all inline

conf/hydra/default.yaml runs this at the end of every multirun (`ReportCallback`). It imports
no torch, so it is quick on a laptop holding a copy of the sweep dir.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from hydra.experimental.callback import Callback

DEFAULT_METRIC = "mean_average_precision_at_r"


@dataclass
class Job:
    name: str
    dir: Path
    overrides: dict[str, str]
    raw_overrides: list[str]
    metrics: dict[str, dict[str, float]] | None
    error: str | None = None
    plots: list[Path] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "ok" if self.metrics is not None else "failed"

    def scores(self, model: str = "trained") -> dict[str, float]:
        """The model's scalar metrics (metrics.json may hold more, e.g. per-class dicts)."""
        scores = (self.metrics or {}).get(model)
        if not isinstance(scores, dict):
            return {}
        return {k: float(v) for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def value(self, metric: str, model: str = "trained") -> float | None:
        return self.scores(model).get(metric)


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """Hydra's override strings (``key=value``, ``+key=value``, ``~key``) -> {key: value}."""
    out = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        out[key] = value if sep else ""
    return out


def _read_overrides(path: Path) -> list[str]:
    """overrides.yaml: the YAML list of the job's override strings."""
    import yaml  # PyYAML comes with omegaconf

    items = yaml.safe_load(path.read_text()) or []
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a list of overrides, got {type(items).__name__}")
    return [str(item) for item in items]


def load_job(job_dir: Path, sweep_dir: Path) -> Job:
    raw = _read_overrides(job_dir / ".hydra" / "overrides.yaml")
    metrics, error = None, None
    metrics_path = job_dir / "metrics.json"
    if not metrics_path.is_file():
        error = "no metrics.json"
    else:
        try:
            metrics = json.loads(metrics_path.read_text())
        except (OSError, ValueError) as exc:
            error = f"unreadable metrics.json: {exc}"
        if metrics is not None and not isinstance(metrics, dict):
            metrics, error = None, "metrics.json is not an object"
    plots = sorted((job_dir / "plots").glob("*.png"), key=lambda p: _natural_key(p.name))
    return Job(name=job_dir.relative_to(sweep_dir).as_posix(), dir=job_dir, overrides=parse_overrides(raw),
               raw_overrides=raw, metrics=metrics, error=error, plots=plots)


def collect_jobs(sweep_dir: Path) -> list[Job]:
    """Every job dir under ``sweep_dir`` (whatever hydra.sweep.subdir made of them), in job order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no such sweep dir: {sweep_dir}")
    job_dirs = [p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")
                if ".submitit" not in p.relative_to(sweep_dir).parts]
    job_dirs = sorted(set(job_dirs), key=lambda d: _natural_key(d.relative_to(sweep_dir).as_posix()))
    return [load_job(d, sweep_dir) for d in job_dirs]


def models_and_metrics(jobs: list[Job]) -> tuple[list[str], list[str]]:
    """Model names ("trained", "untrained", "chance") and scalar metric names, as metrics.json holds them."""
    models: dict[str, None] = {}
    metrics: dict[str, None] = {}
    for job in jobs:
        for model in job.metrics or {}:
            scores = job.scores(model)
            if scores:
                models[model] = None
                metrics.update(dict.fromkeys(scores))
    return list(models), list(metrics)


def override_keys(jobs: list[Job]) -> list[str]:
    keys: dict[str, None] = {}
    for job in jobs:
        keys.update(dict.fromkeys(job.overrides))
    return list(keys)


def swept_keys(jobs: list[Job]) -> list[str]:
    """Keys whose value differs between jobs (all keys when there is a single job)."""
    keys = override_keys(jobs)
    if len(jobs) < 2:
        return keys
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def best_job(jobs: list[Job], metric: str) -> Job | None:
    scored = [job for job in jobs if job.value(metric) is not None]
    return max(scored, key=lambda job: job.value(metric)) if scored else None


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _short(value: str) -> str:
    """A sampled float (0.32124351923223976) to 4 significant digits for the table; CSV keeps it exact."""
    number = _as_float(value) if re.fullmatch(r"[-+]?\d*\.\d{5,}(e[-+]?\d+)?", value) else None
    return value if number is None else f"{number:.4g}"


def table(jobs: list[Job], metric: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table: job, status, swept overrides, trained metrics."""
    keys = swept_keys(jobs)
    best = best_job(jobs, metric)
    metrics = models_and_metrics(jobs)[1]
    header = ["job", "status", *keys, *metrics]
    rows = []
    for job in jobs:
        status = job.status + (" (best)" if job is best else "")
        rows.append([job.name, status, *(_short(job.overrides.get(k, "")) for k in keys),
                     *(_fmt(job.value(m)) for m in metrics)])
    return header, rows


def common_overrides(jobs: list[Job]) -> list[str]:
    if len(jobs) < 2:
        return []
    swept = set(swept_keys(jobs))
    return [line for line in jobs[0].raw_overrides if line.partition("=")[0] not in swept]


def format_text(jobs: list[Job], metric: str) -> str:
    header, rows = table(jobs, metric)
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(jobs: list[Job], metric: str) -> str:
    header, rows = table(jobs, metric)
    esc = [[cell.replace("|", "\\|") for cell in line] for line in [header, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(line) + " |" for line in esc[1:]]
    return "\n".join(lines)


def format_csv(jobs: list[Job]) -> str:
    keys = override_keys(jobs)
    models, metrics = models_and_metrics(jobs)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["job", "status", "error", *keys, *(f"{model}/{m}" for model in models for m in metrics)])
    for job in jobs:
        writer.writerow([job.name, job.status, job.error or "", *(job.overrides.get(k, "") for k in keys),
                         *(_fmt(job.value(m, model)) for model in models for m in metrics)])
    return buffer.getvalue()


def _as_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (steps of 1, 2 or 5 × 10^k) inside [low, high], about ``count`` of them."""
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9)
    return [round(i * step, 12) for i in range(first, math.floor(high / step + 1e-9) + 1)]


def plot_svg(jobs: list[Job], key: str, metric: str) -> str:
    """An SVG scatter of the trained ``metric`` against the value of ``key`` (numeric or categorical),
    with a line through the mean at each value. Failed jobs have no point."""
    points = [(job.overrides.get(key, ""), job.value(metric), job.name) for job in jobs
              if job.value(metric) is not None]
    width, height, left, right, top, bottom = 520, 320, 64, 16, 36, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    raw = [x for x, _, _ in points]
    numeric = bool(raw) and all(_as_float(x) is not None for x in raw)
    if numeric:
        values = [_as_float(x) for x in raw]
        lo, hi = min(values), max(values)
        lo, hi = (lo - 0.5, hi + 0.5) if lo == hi else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        xpos = {x: left + plot_w * (_as_float(x) - lo) / (hi - lo) for x in raw}
        xticks = [(left + plot_w * (t - lo) / (hi - lo), f"{t:g}") for t in _ticks(lo, hi)]
    else:
        categories = list(dict.fromkeys(sorted(raw, key=_natural_key)))
        step = plot_w / max(len(categories), 1)
        xpos = {c: left + step * (i + 0.5) for i, c in enumerate(categories)}
        xticks = [(xpos[c], c) for c in categories]
    ys = [y for _, y, _ in points]
    ylo, yhi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    pad = 0.1 * (yhi - ylo) if yhi > ylo else 0.05
    ylo, yhi = ylo - pad, yhi + pad

    def ypos(y: float) -> float:
        return top + plot_h * (1 - (y - ylo) / (yhi - ylo))

    esc = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="13">'
           f'trained {esc(metric)} vs {esc(key)}</text>',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>']
    for x, label in xticks:
        out.append(f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" stroke="#888"/>'
                   f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{esc(label)}</text>')
    for t in _ticks(ylo, yhi):
        out.append(f'<line x1="{left - 4}" y1="{ypos(t):.1f}" x2="{left + plot_w}" y2="{ypos(t):.1f}" '
                   f'stroke="#eee"/><text x="{left - 6}" y="{ypos(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">{esc(key)}</text>')
    by_x: dict[str, list[float]] = {}
    for x, y, _ in points:
        by_x.setdefault(x, []).append(y)
    mean_line = sorted(((xpos[x], sum(v) / len(v)) for x, v in by_x.items()))
    if len(mean_line) > 1:
        path = " ".join(f"{px:.1f},{ypos(py):.1f}" for px, py in mean_line)
        out.append(f'<polyline points="{path}" fill="none" stroke="#4a7ebb" stroke-width="1.5"/>')
    for x, y, name in points:
        out.append(f'<circle cx="{xpos[x]:.1f}" cy="{ypos(y):.1f}" r="4" fill="#d9534f">'
                   f'<title>job {esc(name)}: {esc(key)}={esc(x)}, {y:.4f}</title></circle>')
    out.append("</svg>")
    return "\n".join(out)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "key"


def format_html(sweep_dir: Path, jobs: list[Job], metric: str, plots: dict[str, str]) -> str:
    esc = html.escape
    header, rows = table(jobs, metric)
    failed = sum(job.status == "failed" for job in jobs)
    parts = ["<!doctype html>", '<html><head><meta charset="utf-8">',
             f"<title>sweep {esc(sweep_dir.name)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
             "tr.failed{background:#fdd}tr.best{background:#dfd}figure{display:inline-block;margin:4px}"
             "img{max-width:560px}figcaption{font-size:12px;color:#555}</style></head><body>",
             f"<h1>Sweep {esc(sweep_dir.name)}</h1>",
             f"<p>{esc(str(sweep_dir.resolve()))}: {len(jobs)} job(s), {failed} failed. "
             f"Written {datetime.now():%Y-%m-%d %H:%M:%S}. Metrics are the trained model's on the "
             f"validation split; best by {esc(metric)}.</p>"]
    common = common_overrides(jobs)
    if common:
        parts.append(f"<p>Every job: <code>{esc(' '.join(common))}</code></p>")
    parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for job, row in zip(jobs, rows):
        css = "failed" if job.status == "failed" else "best" if row[1].endswith("(best)") else ""
        title = f' title="{esc(job.error)}"' if job.error else ""
        parts.append(f'<tr class="{css}"{title}>' + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>")
    parts.append("</table>")
    if plots:
        parts.append("<h2>Plots</h2>")
        parts += [f"<div>{svg}</div>" for svg in plots.values()]
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


def write_report(sweep_dir: Path | str, metric: str = DEFAULT_METRIC) -> str:
    """Write report.{csv,md,html} and one SVG per swept key into ``sweep_dir``; return the table text."""
    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no job dirs (with .hydra/overrides.yaml) under {sweep_dir}")
    metrics = models_and_metrics(jobs)[1]
    if metrics and metric not in metrics:
        raise ValueError(f"metric must be one of {metrics}, got {metric!r}")
    plots = {}
    for key in swept_keys(jobs) if len(jobs) > 1 else []:
        svg = plot_svg(jobs, key, metric)
        (sweep_dir / f"report_{metric}_vs_{_safe(key)}.svg").write_text(svg + "\n")
        plots[key] = svg
    (sweep_dir / "report.csv").write_text(format_csv(jobs))
    (sweep_dir / "report.md").write_text(format_markdown(jobs, metric) + "\n")
    (sweep_dir / "report.html").write_text(format_html(sweep_dir, jobs, metric, plots))
    text = format_text(jobs, metric)
    common = common_overrides(jobs)
    if common:
        text = f"every job: {' '.join(common)}\n{text}"
    return text


class ReportCallback(Callback):
    """Hydra callback: print and write the sweep's report when a multirun ends.

    conf/hydra/default.yaml is shared by every entrypoint; a multirun whose jobs write no
    metrics.json at all (embed, search) gets no report."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not any(sweep_dir.glob("**/metrics.json")):
            return
        try:
            text = write_report(sweep_dir, metric=str(config.get("optimized_metric", DEFAULT_METRIC)))
        except Exception as exc:  # a report problem must not turn a finished sweep into a failure
            print(f"charfeat.report: no report for {sweep_dir}: {exc}", file=sys.stderr)
            return
        print(f"Sweep results ({sweep_dir}/report.html):\n{text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m charfeat.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun dir, e.g. outputs/train/multiruns/<date_time>")
    parser.add_argument("--metric", default=DEFAULT_METRIC,
                        help="metric (a key of metrics.json) to plot and pick the best job by (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        text = write_report(args.sweep_dir, metric=args.metric)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    print(text)
    print(f"\nwrote {args.sweep_dir}/report.csv, report.md, report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
