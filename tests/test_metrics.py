"""Retrieval metrics on hand-made embeddings, and the majority-class chance baseline."""

import pytest
import torch

from charfeat.metrics import chance_metrics, retrieval_metrics


def test_perfect_clusters_score_one():
    embeddings = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert retrieval_metrics(embeddings, labels) == pytest.approx(
        {"precision_at_1": 1.0, "mean_average_precision_at_r": 1.0, "r_precision": 1.0})


def test_interleaved_neighbours_score_zero_at_one():
    """Each item's nearest neighbour is of the other class."""
    angles = torch.tensor([0.0, 0.1, 1.0, 1.1])
    embeddings = torch.stack([angles.cos(), angles.sin()], dim=1)
    metrics = retrieval_metrics(embeddings, torch.tensor([0, 1, 0, 1]))
    assert metrics["precision_at_1"] == pytest.approx(0.0)
    assert metrics["mean_average_precision_at_r"] == pytest.approx(0.0)


def test_chance_is_the_majority_share():
    labels = torch.tensor([2, 2, 2, 0, 1])
    assert chance_metrics(labels, majority_label=2) == pytest.approx(
        {"precision_at_1": 0.6, "mean_average_precision_at_r": 0.6, "r_precision": 0.6})
    assert chance_metrics(labels, majority_label=0)["precision_at_1"] == pytest.approx(0.2)
