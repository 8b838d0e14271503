"""Retrieval metrics: hand-made cases, a cross-check against pytorch-metric-learning, blocking."""

import pytest
import torch
from torch.nn import functional as F

import charfeat.evaluation.metrics as metrics_module
from charfeat.evaluation.metrics import chance_metrics, retrieval_metrics


def test_perfect_clusters_score_one():
    embeddings = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)
    result = retrieval_metrics(embeddings, torch.tensor([0, 0, 0, 1, 1, 1]))
    for name in ("precision_at_1", "recall_at_5", "mean_average_precision_at_r", "r_precision"):
        assert result[name] == pytest.approx(1.0)
    assert result["nn_confusion"] == [[3, 0], [0, 3]]


def test_interleaved_neighbours_score_zero_at_one():
    """Each item's nearest neighbour is of the other class; its second one is right."""
    angles = torch.tensor([0.0, 0.1, 1.0, 1.1])
    embeddings = torch.stack([angles.cos(), angles.sin()], dim=1)
    result = retrieval_metrics(embeddings, torch.tensor([0, 1, 0, 1]))
    assert result["precision_at_1"] == pytest.approx(0.0)
    assert result["mean_average_precision_at_r"] == pytest.approx(0.0)
    assert result["recall_at_5"] == pytest.approx(1.0)
    assert result["nn_confusion"] == [[0, 2], [2, 0]]


def test_hand_computed_map_at_r():
    """Query 0 (class 0, R=2) ranks: 1 (hit), 3 (miss), 2 (hit) -> AP@R = (1/1)/2 = 0.5."""
    embeddings = F.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.9, 0.5]]), dim=1)
    result = retrieval_metrics(embeddings[[0, 1, 2, 3]], torch.tensor([0, 0, 0, 1]))
    # query 1: ranks 0 (hit), 3 (miss) -> 0.5; query 2: ranks 3 (miss), 1 (hit) -> (1/2)/2 = 0.25
    # queries 0..2 are class 0 (R=2); query 3 is alone in class 1 and is left out.
    assert result["mean_average_precision_at_r"] == pytest.approx((0.5 + 0.5 + 0.25) / 3)
    assert result["per_class_precision_at_1"] == pytest.approx({0: 2 / 3})


def test_agrees_with_pytorch_metric_learning():
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (300,), generator=generator)
    centres = torch.randn(6, 16, generator=generator)
    embeddings = F.normalize(centres[labels] + 1.5 * torch.randn(300, 16, generator=generator), dim=1)
    ours = retrieval_metrics(embeddings, labels)
    theirs = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
                                k="max_bin_count").get_accuracy(embeddings, labels)
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, abs=1e-5), name


def test_blocks_give_the_same_answer(monkeypatch):
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (97,), generator=generator)
    embeddings = F.normalize(torch.randn(97, 8, generator=generator), dim=1)
    whole = retrieval_metrics(embeddings, labels)
    monkeypatch.setattr(metrics_module, "_block_size", lambda n: 10)
    blocked = retrieval_metrics(embeddings, labels)
    for name in metrics_module.SCALAR_METRICS:
        assert blocked[name] == pytest.approx(whole[name])
    assert blocked["per_class_precision_at_1"] == pytest.approx(whole["per_class_precision_at_1"])
    assert blocked["nn_confusion"] == whole["nn_confusion"]


def test_needs_two_embeddings():
    with pytest.raises(ValueError, match="at least 2"):
        retrieval_metrics(torch.ones(1, 3), torch.tensor([0]))


def test_chance_is_the_majority_share():
    labels = torch.tensor([2, 2, 2, 0, 1])
    assert chance_metrics(labels, majority_label=2)["precision_at_1"] == pytest.approx(0.6)
    assert chance_metrics(labels, majority_label=2)["mean_average_precision_at_r"] == pytest.approx(0.6)
    assert chance_metrics(labels, majority_label=0)["recall_at_10"] == pytest.approx(0.2)
