"""Retrieval metrics on embeddings: each item queries all the others (leave-one-out).

precision@1 is what the replaced system reported as "Recall@1"; recall@k counts a query as
answered when a same-class item is among its k nearest; MAP@R and R-precision rank all R
same-class items. Queries are processed in blocks against all references with torch top-k, so
no N×N matrix is ever held: memory grows with block × N, not N². Queries whose class has no
other item cannot be answered and are left out, as pytorch-metric-learning does.

The neighbour search runs once (`query_results`): it keeps every query's own value of each metric
and its first few neighbours, so the summary (`summarize`), the bootstrap intervals and the
suspect labels all reuse it and never search again. `chance_per_query` is the exact expected value
of each metric under a uniformly random ranking of the gallery, from the class sizes alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from charfeat.config import Metric

SCALAR_METRICS = tuple(Metric.__members__)  # plain names, in table order
RECALL_KS = (1, 5, 10)


def _block_size(n: int, budget: int = 2**25) -> int:
    """Queries per block so one block's similarity matrix stays near ``budget`` floats (128 MB)."""
    return max(1, min(4096, budget // max(n, 1)))


@dataclass
class QueryResults:
    """Every item's result as a query. ``values[metric]`` [N] float64 (0 where not answerable);
    ``answerable`` [N] bool (its class has another item); ``neighbours``/``scores`` [N, k]: its k
    nearest other items and their cosine similarity, best first."""

    labels: torch.Tensor
    answerable: torch.Tensor
    values: dict[str, torch.Tensor]
    neighbours: torch.Tensor
    scores: torch.Tensor
    num_classes: int

    def answered(self) -> dict[str, np.ndarray]:
        """Per-query values of the answerable queries only, as numpy arrays (the bootstrap's input)."""
        return {name: value[self.answerable].numpy() for name, value in self.values.items()}


@torch.no_grad()
def query_results(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None,
                  keep: int = 10) -> QueryResults:
    """embeddings [N, D] (L2-normalised here; cosine similarity), labels [N] -> per-query results,
    keeping each query's first ``keep`` neighbours."""
    embeddings = F.normalize(embeddings.detach().float().cpu(), dim=1)
    labels = labels.detach().long().cpu()
    n = len(labels)
    if n < 2:
        raise ValueError(f"retrieval metrics need at least 2 embeddings, got {n}")
    num_classes = num_classes or int(labels.max()) + 1
    r_all = torch.bincount(labels, minlength=num_classes)[labels] - 1  # same-class references of each query
    k_max = min(n - 1, max(int(r_all.max()), max(RECALL_KS), keep))
    keep = min(keep, n - 1)
    values = {name: torch.zeros(n, dtype=torch.float64) for name in SCALAR_METRICS}
    neighbours = torch.zeros(n, keep, dtype=torch.long)
    scores = torch.zeros(n, keep)
    block = _block_size(n)
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = embeddings[start:stop] @ embeddings.T
        sims[torch.arange(stop - start), torch.arange(start, stop)] = float("-inf")  # not itself
        top = sims.topk(k_max, dim=1)
        neighbours[start:stop], scores[start:stop] = top.indices[:, :keep], top.values[:, :keep]
        _score_block(labels[top.indices] == labels[start:stop, None], r_all[start:stop], values, start)
    return QueryResults(labels, r_all > 0, values, neighbours, scores, num_classes)


def _score_block(hits: torch.Tensor, r: torch.Tensor, values: dict[str, torch.Tensor], start: int) -> None:
    """Each query's metrics from its ranked hits [B, k_max] and its R [B], written into ``values``."""
    k_max = hits.shape[1]
    hits_r = hits & (torch.arange(k_max)[None, :] < r[:, None])
    precision_at_j = hits_r.cumsum(1) / torch.arange(1, k_max + 1)
    r_safe = r.clamp(min=1).double()
    stop = start + len(r)
    values["precision_at_1"][start:stop] = hits[:, 0].double()
    values["recall_at_5"][start:stop] = hits[:, :5].any(1).double()
    values["recall_at_10"][start:stop] = hits[:, :10].any(1).double()
    values["mean_average_precision_at_r"][start:stop] = (precision_at_j * hits_r).sum(1).double() / r_safe
    values["r_precision"][start:stop] = hits_r.sum(1).double() / r_safe
    for value in values.values():
        value[start:stop][r == 0] = 0.0


def summarize(results: QueryResults) -> dict:
    """The scalar metrics (means over answerable queries), ``per_class_precision_at_1`` (class
    index -> value, for classes with answerable queries) and ``nn_confusion`` ([C][C] counts: row =
    query class, column = nearest neighbour's class, over every query)."""
    mask, labels, c = results.answerable, results.labels, results.num_classes
    answerable = max(int(mask.sum()), 1)
    out = {name: float(results.values[name][mask].sum()) / answerable for name in SCALAR_METRICS}
    correct = torch.zeros(c, dtype=torch.float64).index_add_(0, labels[mask], results.values["precision_at_1"][mask])
    asked = torch.bincount(labels[mask], minlength=c)
    out["per_class_precision_at_1"] = {k: float(correct[k] / asked[k]) for k in range(c) if asked[k] > 0}
    confusion = torch.zeros(c, c, dtype=torch.long)
    confusion.index_put_((labels, labels[results.neighbours[:, 0]]), torch.ones(len(labels), dtype=torch.long),
                         accumulate=True)
    out["nn_confusion"] = confusion.tolist()
    return out


def retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> dict:
    """embeddings [N, D], labels [N] -> the summary of `query_results` (see `summarize`)."""
    return summarize(query_results(embeddings, labels, num_classes, keep=1))


def chance_per_query(labels: torch.Tensor, num_classes: int | None = None) -> dict[str, torch.Tensor]:
    """Each item's expected metrics [N] (float64) as a query when the other M = N-1 items are
    ranked uniformly at random, R of them of its class. Exact, from the class sizes:

    - precision@1 = R-precision = R/M (each position holds a same-class item with probability R/M);
    - recall@k = 1 - C(M-R, k)/C(M, k), with k at most M (no same-class item among k drawn);
    - MAP@R = (H_R + (R-1)/(M-1) · (R - H_R)) / M, H_R the R-th harmonic number: position i adds
      E[hit_i · hits in 1..i]/i = (R/M + (i-1)·R(R-1)/(M(M-1)))/i, summed over i ≤ R, divided by R.

    Unanswerable queries (R = 0) get 0, as in `query_results`.
    """
    labels = labels.detach().long().cpu()
    n = len(labels)
    if n < 2:
        raise ValueError(f"chance metrics need at least 2 items, got {n}")
    num_classes = num_classes or int(labels.max()) + 1
    r = (torch.bincount(labels, minlength=num_classes) - 1).clamp(min=0).double()
    m = float(n - 1)
    harmonic = torch.tensor([sum(1.0 / i for i in range(1, int(x) + 1)) for x in r.tolist()], dtype=torch.float64)
    pair = (r - 1) / (m - 1) if m > 1 else torch.zeros_like(r)  # M = 1: R <= 1, the pair term is 0
    per_class = {"precision_at_1": r / m, "r_precision": r / m,
                 "mean_average_precision_at_r": (harmonic + pair * (r - harmonic)) / m}
    for k in RECALL_KS[1:]:
        none_found = torch.ones_like(r)
        for j in range(min(k, int(m))):
            none_found *= ((m - r - j) / (m - j)).clamp(min=0)
        per_class[f"recall_at_{k}"] = 1 - none_found
    answerable = r[labels] > 0
    return {name: torch.where(answerable, per_class[name][labels], 0.0) for name in SCALAR_METRICS}


def chance_metrics(labels: torch.Tensor, num_classes: int | None = None) -> dict[str, float]:
    """The expected value of each scalar metric under a random ranking, averaged over the
    answerable queries (the queries a model is scored on)."""
    values = chance_per_query(labels, num_classes)
    labels = labels.detach().long().cpu()
    answerable = torch.bincount(labels, minlength=num_classes or int(labels.max()) + 1)[labels] > 1
    count = max(int(answerable.sum()), 1)
    return {name: float(value[answerable].sum()) / count for name, value in values.items()}
