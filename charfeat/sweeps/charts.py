"""Charts of a sweep, drawn with matplotlib as SVG: the trained metric against each swept key.

Each job with the metric is a point (hovering shows its name, swept overrides and value); a failed
job has none. Lines join the mean at each value of the key, and show how it interacts with the
other swept keys:

- one swept key: one line;
- two: one line per value of the other key, with a legend;
- three or more: one line per value of the other key with the fewest values; the line's mean is
  over the remaining keys, which the title names.

A key with more than ``MAX_LINES`` values never splits the lines (an Optuna study samples every
float anew): it is averaged over instead. Numeric values get a numeric x axis (log scale when
they span two decades or more), others one tick per value in natural order.

matplotlib is imported inside the functions (no display needed: the figure is rendered straight
to SVG). The SVG of a sweep is the same bytes each time: a fixed hash salt for its ids, no date in
its metadata, text kept as text.
"""

from __future__ import annotations

import html
import io
from statistics import fmean
from typing import TYPE_CHECKING

from charfeat.sweeps.jobs import Job, as_float, natural_key, swept_keys

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_LINES = 8


def _ordered(values: set[str]) -> list[str]:
    """Numbers by value, anything else in natural order."""
    if all(as_float(v) is not None for v in values):
        return sorted(values, key=as_float)
    return sorted(values, key=natural_key)


def line_keys(jobs: list[Job], key: str, metric: str) -> tuple[str | None, list[str]]:
    """For ``key``'s chart: the swept key with one line per value (None: a single line), and the
    swept keys each line averages over. Values are counted among the jobs that have ``metric``."""
    others = [k for k in swept_keys(jobs) if k != key]
    counts = {k: len({job.overrides.get(k, "") for job in jobs if job.value(metric) is not None}) for k in others}
    by = min((k for k in others if counts[k] <= MAX_LINES), key=counts.__getitem__, default=None)
    return by, [k for k in others if k != by]


def x_positions(values: set[str]) -> tuple[dict[str, float], bool]:
    """Where each value of the key goes on the x axis, and whether the axis is numeric
    (every value a number: at that number; else at 0, 1, 2, ... in natural order)."""
    ordered = _ordered(values)
    numeric = bool(ordered) and all(as_float(v) is not None for v in ordered)
    return {v: as_float(v) if numeric else float(i) for i, v in enumerate(ordered)}, numeric


def chart_figure(jobs: list[Job], key: str, metric: str) -> tuple[Figure, dict[str, str]]:
    """The Figure of the trained ``metric`` against ``key``, and each point's gid -> its tooltip."""
    from matplotlib.figure import Figure

    scored = [job for job in jobs if job.value(metric) is not None]
    by, averaged = line_keys(jobs, key, metric)
    swept = swept_keys(jobs)
    position, numeric = x_positions({job.overrides.get(key, "") for job in scored})
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    tooltips = {}
    groups = _ordered({job.overrides.get(by, "") for job in scored}) if by is not None else [None]
    for i, group in enumerate(groups):
        colour = f"C{i % 10}"
        by_x: dict[float, list[float]] = {}
        for job in (job for job in scored if by is None or job.overrides.get(by, "") == group):
            x, y = position[job.overrides.get(key, "")], job.value(metric)
            by_x.setdefault(x, []).append(y)
            gid = f"job-{len(tooltips)}"
            ax.scatter([x], [y], s=24, color=colour, zorder=3, gid=gid)
            overrides = " ".join(f"{k}={job.overrides.get(k, '')}" for k in swept)
            tooltips[gid] = f"job {job.name}: {overrides}: {metric} {y:.4f}"
        xs = sorted(by_x)
        label = None if by is None else (group or "(not set)")
        ax.plot(xs, [fmean(by_x[x]) for x in xs], color=colour, linewidth=1.5, label=label, zorder=2)

    if not scored:
        ax.text(0.5, 0.5, f"no job has {metric}", ha="center", va="center", transform=ax.transAxes)
    elif not numeric:
        ax.set_xticks(list(position.values()), list(position))
        ax.set_xlim(-0.5, len(position) - 0.5)
    elif min(position.values()) > 0 and max(position.values()) >= 100 * min(position.values()):
        ax.set_xscale("log")
    if by is not None and scored:
        ax.legend(title=by, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, title_fontsize=9)
    title = f"trained {metric} vs {key}"
    if averaged:
        title += f"\n{'each line' if by else 'line'}: mean over {', '.join(averaged)}"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    return fig, tooltips


def chart_svg(jobs: list[Job], key: str, metric: str) -> str:
    """``chart_figure`` as an SVG document, each point with a <title> (the browser's tooltip)."""
    import matplotlib

    fig, tooltips = chart_figure(jobs, key, metric)
    buffer = io.StringIO()
    # a salt per chart: the ids of two charts inlined in one HTML page never clash
    with matplotlib.rc_context({"svg.hashsalt": f"charfeat {metric} vs {key}", "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    for gid, text in tooltips.items():
        svg = svg.replace(f'<g id="{gid}">', f"<g>\n   <title>{html.escape(text)}</title>", 1)
    return svg
