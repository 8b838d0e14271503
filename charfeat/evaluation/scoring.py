"""Scoring a split's rows: each model or baseline's metrics, the exact chance row, and a 95 %
bootstrap interval for every metric of every row, all on the same queries.

A row is a set of embeddings of the split (the trained model's, the untrained head's, the raw
backbone's pooled features). Each row's neighbours are searched once (`query_results`); the
summary, the intervals and the suspect labels come from those per-query results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charfeat.evaluation.bootstrap import intervals
from charfeat.evaluation.metrics import SCALAR_METRICS, QueryResults, chance_per_query, query_results, summarize
from charfeat.evaluation.results import CI, with_class_names

CHANCE = "chance"


@dataclass
class Scores:
    """``results``: metrics.json's content; ``queries``: each embedding row's per-query results;
    ``per_query``: {row: {metric: values of the answerable queries}}, chance included;
    ``answerable``: [N] bool, the queries every row is scored on."""

    results: dict
    queries: dict[str, QueryResults]
    per_query: dict[str, dict[str, np.ndarray]]
    answerable: torch.Tensor


def score_rows(rows: dict[str, torch.Tensor], labels: torch.Tensor, class_names: list[str], bootstrap: int,
               seed: int, keep: int = 10) -> Scores:
    """Every row's metrics (per-class results keyed by class name), then "chance", then, when
    ``bootstrap`` > 0, ``"<row>_ci95"`` for each row: {metric: [low, high]} from ``bootstrap``
    seeded resamples of the queries, the same resamples for every row and metric."""
    if bootstrap < 0:
        raise ValueError(f"eval.bootstrap must be >= 0 (0: no intervals), got {bootstrap}")
    num_classes = len(class_names)
    queries = {name: query_results(embeddings, labels, num_classes, keep) for name, embeddings in rows.items()}
    results = {name: with_class_names(summarize(q), class_names) for name, q in queries.items()}
    answerable = next(iter(queries.values())).answerable
    if not answerable.any():
        raise ValueError("no query can be scored: every class has a single item in this split")
    per_query = {name: q.answered() for name, q in queries.items()}
    per_query[CHANCE] = {name: v[answerable].numpy() for name, v in chance_per_query(labels, num_classes).items()}
    results[CHANCE] = {name: float(v.mean()) for name, v in per_query[CHANCE].items()}
    if bootstrap:
        columns = {(row, m): values[m] for row, values in per_query.items() for m in SCALAR_METRICS}
        bounds = intervals({f"{row}/{m}": v for (row, m), v in columns.items()}, bootstrap, seed)
        for row in per_query:
            results[row + CI] = {m: list(bounds[f"{row}/{m}"]) for m in SCALAR_METRICS}
    return Scores(results, queries, per_query, answerable)
