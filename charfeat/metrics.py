"""Retrieval metrics on embeddings: each item queries all the others (leave-one-out).

precision@1 is what the replaced system reported as "Recall@1"; MAP@R and R-precision rank
all R same-class items. The chance baseline always answers the training majority class.
"""

import numpy as np
import torch

METRICS = ("precision_at_1", "mean_average_precision_at_r", "r_precision")


def retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """embeddings [N, D] (unit length), labels [N] -> pytorch-metric-learning's AccuracyCalculator.

    k="max_bin_count" asks for R neighbours (the largest class size), not N-1: enough for
    MAP@R and bounded in memory.
    """
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calculator = AccuracyCalculator(include=METRICS, k="max_bin_count", device=torch.device("cpu"))
    result = calculator.get_accuracy(embeddings.detach().float().cpu(), labels.cpu())
    return {name: float(result[name]) for name in METRICS}


def chance_metrics(query_labels: torch.Tensor, majority_label: int) -> dict[str, float]:
    """Scores of a ranking that puts the majority class first for every query.

    Its nearest neighbour is right exactly for majority-class queries, and for those all R
    retrieved items are right, so every metric equals the majority class's share of the queries.
    """
    share = float(np.mean(query_labels.cpu().numpy() == majority_label))
    return {name: share for name in METRICS}
