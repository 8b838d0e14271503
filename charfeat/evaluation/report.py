"""report.html: one run's evaluation as a single self-contained page (every image inline).

The metrics table with intervals and every baseline, per-class precision@1, the plots (each shown
560 px wide), and the suspect labels with thumbnails of each suspect and its neighbours. Nothing
is fetched from elsewhere: the page opens offline, from a copied run dir, or as a CI artifact.
Every string from the data (class names, ids, file names) is escaped.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from charfeat.evaluation.metrics import SCALAR_METRICS
from charfeat.evaluation.plots import DISPLAY_WIDTH
from charfeat.evaluation.results import CI, HEADERS, cell, rows

STYLE = ("body{font-family:sans-serif;margin:1.5em auto;max-width:980px;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
         "td:first-child,th:first-child,td.t,th.t{text-align:left}figure{margin:1em 0}"
         f"img.plot{{width:{DISPLAY_WIDTH}px;max-width:100%;height:auto}}figcaption{{font-size:13px;color:#555}}"
         "table.suspects td{vertical-align:top;font-size:13px;overflow-wrap:anywhere}"
         "img.thumb{width:72px;height:72px;object-fit:contain;background:#eee;display:block}"
         "div.n{display:inline-block;width:84px;margin:0 2px 2px 0;padding:2px;font-size:12px;vertical-align:top}"
         "div.same{background:#dfd}div.other{background:#fdd}")


@dataclass
class RunReport:
    """What the page shows. ``heading``: what was scored (model, epoch, split); ``results``:
    metrics.json's content; ``counts``: queries per class; ``plots``: {caption: PNG path};
    ``suspects``: suspects.jsonl's rows (the first few are shown); ``thumbnails``: {filename: JPEG}."""

    heading: str
    notes: list[str]
    results: dict
    class_names: list[str]
    counts: list[int]
    plots: dict[str, Path] = field(default_factory=dict)
    suspects: list[dict] = field(default_factory=list)
    thumbnails: dict[str, bytes] = field(default_factory=dict)


def _data_uri(blob: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(blob).decode('ascii')}"


def metrics_table(results: dict) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(HEADERS[m])}</th>" for m in SCALAR_METRICS)
    body = "".join(f"<tr><td>{esc(name)}</td>" + "".join(
        f"<td>{esc(cell(results[name][m], results.get(name + CI, {}).get(m)))}</td>" for m in SCALAR_METRICS)
        + "</tr>" for name in rows(results))
    return f"<table><tr><th>row</th>{head}</tr>{body}</table>"


def per_class_table(results: dict, class_names: list[str], counts: list[int]) -> str:
    """Per class: its queries and each embedding row's precision@1 (blank where it has none)."""
    esc = html.escape
    scored = [name for name in rows(results) if "per_class_precision_at_1" in results[name]]
    head = "".join(f"<th>{esc(name)}</th>" for name in scored)
    lines = []
    for name, count in zip(class_names, counts):
        values = [results[row]["per_class_precision_at_1"].get(name) for row in scored]
        lines.append(f"<tr><td>{esc(name)}</td><td>{count}</td>" + "".join(
            f"<td>{'' if v is None else f'{v:.3f}'}</td>" for v in values) + "</tr>")
    return f"<table><tr><th>class</th><th>queries</th>{head}</tr>{''.join(lines)}</table>"


def _thumb(report: RunReport, filename: str) -> str:
    blob = report.thumbnails.get(filename)
    if blob is None:
        return ""
    return f'<img class="thumb" src="{_data_uri(blob, "image/jpeg")}" alt="{html.escape(filename)}">'


def suspects_table(report: RunReport, shown: int) -> str:
    esc = html.escape
    lines = []
    for row in report.suspects[:shown]:
        near = "".join(f'<div class="n {"same" if n["label"] == row["label"] else "other"}">'
                       f'{_thumb(report, n["filename"])}{esc(n["label"])}<br>{n["cosine"]:.3f}</div>'
                       for n in row["neighbours"][:5])
        lines.append(f'<tr><td>{row["rank"]}</td><td class="t">{_thumb(report, row["filename"])}{esc(row["id"])}<br>'
                     f'{esc(row["filename"])}</td><td class="t">{esc(row["label"])}</td>'
                     f'<td class="t">{esc(row["suggested_label"])}</td><td>{row["agreement"]:.2f}</td>'
                     f'<td class="t">{near}</td></tr>')
    head = ('<tr><th>rank</th><th class="t">item</th><th class="t">label</th><th class="t">neighbours say</th>'
            '<th>agree</th><th class="t">nearest 5: label, cosine (green: same label as the item)</th></tr>')
    return f'<table class="suspects">{head}{"".join(lines)}</table>'


def render(report: RunReport, shown_suspects: int = 20) -> str:
    esc = html.escape
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{esc(report.heading)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{esc(report.heading)}</h1>", *(f"<p>{esc(note)}</p>" for note in report.notes),
             "<h2>Metrics</h2>", metrics_table(report.results),
             "<p>±: half the width of the 95 % bootstrap interval over queries. chance: the expected value "
             "under a random ranking of the gallery, on the same queries.</p>",
             "<h2>Precision@1 per class</h2>", per_class_table(report.results, report.class_names, report.counts)]
    parts.append("<h2>Plots</h2>" if report.plots else "<h2>Plots</h2><p>No plots (turned off).</p>")
    for caption, path in report.plots.items():
        parts.append(f'<figure><img class="plot" src="{_data_uri(Path(path).read_bytes(), "image/png")}" '
                     f'alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>')
    parts.append(f"<h2>Suspect labels</h2><p>{len(report.suspects)} item(s) whose nearest neighbours mostly "
                 f"carry another label, most confident first (all of them in suspects.jsonl).</p>")
    if report.suspects:
        parts.append(suspects_table(report, shown_suspects))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_run_report(path: Path, report: RunReport) -> Path:
    path.write_text(render(report), encoding="utf-8")
    return path
