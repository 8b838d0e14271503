"""A run's results: the metrics table as printed, metrics.json as written, scalars for a tracker.

Results are ``{row: {metric: value, ...}, "<row>_ci95": {metric: [low, high], ...}, ...}``: one row
per model or baseline (trained, untrained, backbone, chance; evaluate's "model"), and beside each,
when intervals were computed, its 95 % bootstrap interval per scalar metric.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

from charfeat.evaluation.metrics import SCALAR_METRICS

HEADERS = {"precision_at_1": "P@1", "recall_at_5": "R@5", "recall_at_10": "R@10",
           "mean_average_precision_at_r": "MAP@R", "r_precision": "R-prec"}
CI = "_ci95"
DIGITS = 6  # metrics.json: enough for any metric of a million queries, none of float32's noise


def rows(results: dict) -> list[str]:
    """The row names of ``results``, in order (interval entries left out)."""
    return [name for name in results if not name.endswith(CI)]


def cell(value: float, interval: list[float] | tuple[float, float] | None) -> str:
    """``0.412 ±0.050``: the value and half the interval's width to two significant digits."""
    if interval is None:
        return f"{value:.3f}"
    half = (interval[1] - interval[0]) / 2
    return f"{value:.3f} ±{half:#.2g}" if half > 0 else f"{value:.3f} ±0"


def format_table(results: dict, title: str = "") -> str:
    """One line per row, scalar metrics only, each with its interval when ``results`` has one.
    ``title`` heads the row-name column (what was scored, e.g. "val, 80 queries")."""
    names = rows(results)
    cells = [[cell(results[name][m], results.get(name + CI, {}).get(m)) for m in SCALAR_METRICS] for name in names]
    first = max([len(title)] + [len(name) for name in names]) + 2
    width = max([len(HEADERS[m]) for m in SCALAR_METRICS] + [len(c) for line in cells for c in line]) + 2
    lines = [f"{title:<{first}}" + "".join(f"{HEADERS[m]:>{width}}" for m in SCALAR_METRICS)]
    lines += [f"{name:<{first}}" + "".join(f"{c:>{width}}" for c in line) for name, line in zip(names, cells)]
    return "\n".join(line.rstrip() for line in lines)


def scalars(metrics: dict, prefix: str) -> dict[str, float]:
    """The scalar metrics, keyed ``<prefix><name>`` (``val/precision_at_1``)."""
    return {f"{prefix}{name}": metrics[name] for name in SCALAR_METRICS}


def tracked(results: dict) -> dict[str, float]:
    """Every row's scalars for a tracker's summary: ``<row>/<metric>``, and the interval's ends as
    ``<row>/<metric>_ci95_low`` and ``_high``."""
    out = {}
    for name in rows(results):
        out.update(scalars(results[name], f"{name}/"))
        for metric, (low, high) in results.get(name + CI, {}).items():
            out[f"{name}/{metric}{CI}_low"], out[f"{name}/{metric}{CI}_high"] = low, high
    return out


def with_class_names(metrics: dict, class_names: list[str]) -> dict:
    """Per-class results keyed by class name, and the confusion matrix with its row/column names."""
    named = dict(metrics)
    named["per_class_precision_at_1"] = {class_names[c]: v for c, v in metrics["per_class_precision_at_1"].items()}
    named["nn_confusion"] = {"classes": class_names, "counts": metrics["nn_confusion"]}
    return named


def rounded(value):
    """Every float in a nested structure as a Python float rounded to DIGITS decimals
    (float32's 0.699999988079071 becomes 0.7); non-finite values are kept."""
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(item) for item in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):  # numpy's floats too
        value = float(value)
        return round(value, DIGITS) if math.isfinite(value) else value
    return value


def write_metrics(path: Path, results: dict) -> None:
    """metrics.json: ``results``, rounded (see `rounded`)."""
    path.write_text(json.dumps(rounded(results), indent=2) + "\n")
