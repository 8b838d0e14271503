"""Retrieval metrics on embeddings: each item queries all the others (leave-one-out).

precision@1 is what the replaced system reported as "Recall@1"; recall@k counts a query as
answered when a same-class item is among its k nearest; MAP@R and R-precision rank all R
same-class items. Queries are processed in blocks against all references with torch top-k, so
no N×N matrix is ever held: memory grows with block × N, not N². Queries whose class has no
other item cannot be answered and are left out, as pytorch-metric-learning does.
The chance baseline always answers the training majority class.
"""

import torch

from charfeat.config import Metric

SCALAR_METRICS = tuple(Metric.__members__)  # plain names, in table order
RECALL_KS = (1, 5, 10)


def _block_size(n: int, budget: int = 2**25) -> int:
    """Queries per block so one block's similarity matrix stays near ``budget`` floats (128 MB)."""
    return max(1, min(4096, budget // max(n, 1)))


@torch.no_grad()
def retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> dict:
    """embeddings [N, D] (unit length; cosine similarity), labels [N] -> metrics.

    Returns the scalar metrics of SCALAR_METRICS (recall_at_1 equals precision_at_1), plus
    ``per_class_precision_at_1`` (class index -> value, for classes with answerable queries) and
    ``nn_confusion`` ([C][C] counts: row = query class, column = nearest neighbour's class).
    """
    embeddings = embeddings.detach().float().cpu()
    labels = labels.detach().long().cpu()
    n = len(labels)
    if n < 2:
        raise ValueError(f"retrieval metrics need at least 2 embeddings, got {n}")
    num_classes = num_classes or int(labels.max()) + 1
    class_sizes = torch.bincount(labels, minlength=num_classes)
    r_all = class_sizes[labels] - 1  # same-class references of each query
    k_max = min(n - 1, max(int(r_all.max()), max(RECALL_KS)))
    sums = {name: 0.0 for name in ("p1", "r5", "r10", "map_r", "r_prec")}
    correct_per_class = torch.zeros(num_classes)
    answerable_per_class = torch.zeros(num_classes)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    block = _block_size(n)
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = embeddings[start:stop] @ embeddings.T
        sims[torch.arange(stop - start), torch.arange(start, stop)] = float("-inf")  # not itself
        neighbours = sims.topk(k_max, dim=1).indices
        query_labels = labels[start:stop]
        hits = labels[neighbours] == query_labels[:, None]
        confusion.index_put_((query_labels, labels[neighbours[:, 0]]), torch.ones(stop - start, dtype=torch.long),
                             accumulate=True)
        r = r_all[start:stop]
        keep = r > 0
        hits, r, query_labels = hits[keep], r[keep], query_labels[keep]
        within_r = torch.arange(k_max)[None, :] < r[:, None]
        hits_r = hits & within_r
        precision_at_j = hits_r.cumsum(1) / torch.arange(1, k_max + 1)
        sums["p1"] += hits[:, 0].sum().item()
        sums["r5"] += hits[:, :5].any(1).sum().item()
        sums["r10"] += hits[:, :10].any(1).sum().item()
        sums["map_r"] += ((precision_at_j * hits_r).sum(1) / r).sum().item()
        sums["r_prec"] += (hits_r.sum(1) / r).sum().item()
        correct_per_class.index_add_(0, query_labels, hits[:, 0].float())
        answerable_per_class.index_add_(0, query_labels, torch.ones(len(query_labels)))
    answerable = max(int((r_all > 0).sum()), 1)
    return {
        "precision_at_1": sums["p1"] / answerable,
        "recall_at_5": sums["r5"] / answerable,
        "recall_at_10": sums["r10"] / answerable,
        "mean_average_precision_at_r": sums["map_r"] / answerable,
        "r_precision": sums["r_prec"] / answerable,
        "per_class_precision_at_1": {c: (correct_per_class[c] / answerable_per_class[c]).item()
                                     for c in range(num_classes) if answerable_per_class[c] > 0},
        "nn_confusion": confusion.tolist(),
    }


def chance_metrics(query_labels: torch.Tensor, majority_label: int) -> dict[str, float]:
    """Scores of a ranking that puts the majority class first for every query.

    Its nearest neighbours are right exactly for majority-class queries, and for those all R
    retrieved items are right, so every metric equals the majority class's share of the queries.
    """
    share = float((query_labels.cpu() == majority_label).float().mean())
    return {name: share for name in SCALAR_METRICS}
