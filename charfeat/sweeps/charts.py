"""Charts of a sweep: the trained metric against each swept key, as a hand-written SVG."""

from __future__ import annotations

import html
import math

from charfeat.sweeps.jobs import Job, as_float, natural_key


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (steps of 1, 2 or 5 × 10^k) inside [low, high], about ``count`` of them."""
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9)
    return [round(i * step, 12) for i in range(first, math.floor(high / step + 1e-9) + 1)]


def chart_svg(jobs: list[Job], key: str, metric: str) -> str:
    """An SVG scatter of the trained ``metric`` against the value of ``key`` (numeric or categorical),
    with a line through the mean at each value. Failed jobs have no point."""
    points = [(job.overrides.get(key, ""), job.value(metric), job.name) for job in jobs
              if job.value(metric) is not None]
    width, height, left, right, top, bottom = 520, 320, 64, 16, 36, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    raw = [x for x, _, _ in points]
    numeric = bool(raw) and all(as_float(x) is not None for x in raw)
    if numeric:
        values = [as_float(x) for x in raw]
        lo, hi = min(values), max(values)
        lo, hi = (lo - 0.5, hi + 0.5) if lo == hi else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        xpos = {x: left + plot_w * (as_float(x) - lo) / (hi - lo) for x in raw}
        xticks = [(left + plot_w * (t - lo) / (hi - lo), f"{t:g}") for t in _ticks(lo, hi)]
    else:
        categories = list(dict.fromkeys(sorted(raw, key=natural_key)))
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
    return "\n".join(out) + "\n"
