"""A run's results: the metrics table as printed, metrics.json as written, scalars for a tracker."""

import json
from pathlib import Path

from charfeat.evaluation.metrics import SCALAR_METRICS

HEADERS = {"precision_at_1": "P@1", "recall_at_5": "R@5", "recall_at_10": "R@10",
           "mean_average_precision_at_r": "MAP@R", "r_precision": "R-prec"}


def format_table(results: dict[str, dict]) -> str:
    """One row per model (trained, untrained, chance, ...), scalar metrics only."""
    rows = [f"{'model':<10}" + "".join(f"{HEADERS[name]:>9}" for name in SCALAR_METRICS)]
    for model, metrics in results.items():
        rows.append(f"{model:<10}" + "".join(f"{metrics[name]:>9.4f}" for name in SCALAR_METRICS))
    return "\n".join(rows)


def scalars(metrics: dict, prefix: str) -> dict[str, float]:
    """The scalar metrics, keyed ``<prefix><name>`` (``val/precision_at_1``)."""
    return {f"{prefix}{name}": metrics[name] for name in SCALAR_METRICS}


def with_class_names(metrics: dict, class_names: list[str]) -> dict:
    """Per-class results keyed by class name, and the confusion matrix with its row/column names."""
    named = dict(metrics)
    named["per_class_precision_at_1"] = {class_names[c]: v for c, v in metrics["per_class_precision_at_1"].items()}
    named["nn_confusion"] = {"classes": class_names, "counts": metrics["nn_confusion"]}
    return named


def write_metrics(path: Path, results: dict[str, dict]) -> None:
    """metrics.json: ``{model: {metric: value, ...}, ...}``."""
    path.write_text(json.dumps(results, indent=2) + "\n")
