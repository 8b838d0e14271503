"""Retrieval metrics: hand-made cases, a cross-check against pytorch-metric-learning, blocking."""

import itertools

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import charfeat.evaluation.metrics as metrics_module
from charfeat.evaluation.metrics import SCALAR_METRICS, chance_metrics, query_results, retrieval_metrics, summarize


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
    monkeypatch.setattr(metrics_module, "_block_size", lambda n: 10)  # with 4 classes, blocks straddle classes
    blocked = retrieval_metrics(embeddings, labels)
    for name in metrics_module.SCALAR_METRICS:
        assert blocked[name] == pytest.approx(whole[name])
    assert blocked["per_class_precision_at_1"] == pytest.approx(whole["per_class_precision_at_1"])
    assert blocked["nn_confusion"] == whole["nn_confusion"]


@pytest.mark.parametrize("bound", ["too high: every row is redone", "lowest: every column is kept"])
def test_the_rows_bound_changes_no_result(monkeypatch, bound):
    """The search ranks only the columns above a bound sampled per row; a bound that keeps too few
    (the row is redone with every column) or every column gives the same results, bit for bit."""
    generator = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 5, (400,), generator=generator)
    embeddings = F.normalize(torch.randn(5, 16, generator=generator)[labels] + torch.randn(400, 16, generator=generator), dim=1)
    sampled_bounds = []
    threshold = metrics_module._BlockSearch._threshold
    monkeypatch.setattr(metrics_module._BlockSearch, "_threshold",
                        lambda self, sims: sampled_bounds.append(threshold(self, sims)) or sampled_bounds[-1])
    sampled = query_results(embeddings, labels, keep=3)
    assert (np.concatenate(sampled_bounds) > -1).all()  # the sample did bound every row at this size
    value = 1.5 if bound.startswith("too high") else metrics_module._LOWEST
    monkeypatch.setattr(metrics_module._BlockSearch, "_threshold", lambda self, sims: np.full(len(sims), value, np.float32))
    forced = query_results(embeddings, labels, keep=3)
    for name in SCALAR_METRICS:
        assert torch.equal(forced.values[name], sampled.values[name]), name
    assert torch.equal(forced.neighbours, sampled.neighbours) and torch.equal(forced.scores, sampled.scores)


def test_needs_two_embeddings():
    with pytest.raises(ValueError, match="at least 2"):
        retrieval_metrics(torch.ones(1, 3), torch.tensor([0]))


def brute_force_chance(labels: list[int], k_recall=(5, 10)) -> dict[str, float]:
    """The mean of every metric over every ordering of the gallery, for each answerable query."""
    totals, answerable = dict.fromkeys(SCALAR_METRICS, 0.0), 0
    for q, label in enumerate(labels):
        others = [x for i, x in enumerate(labels) if i != q]
        r = others.count(label)
        if r == 0:
            continue
        answerable += 1
        orders = list(itertools.permutations(others))
        for order in orders:
            hits = [x == label for x in order]
            totals["precision_at_1"] += hits[0] / len(orders)
            for k in k_recall:
                totals[f"recall_at_{k}"] += any(hits[:k]) / len(orders)
            ap = sum(sum(hits[:i + 1]) / (i + 1) for i in range(r) if hits[i]) / r
            totals["mean_average_precision_at_r"] += ap / len(orders)
            totals["r_precision"] += sum(hits[:r]) / r / len(orders)
    return {name: value / answerable for name, value in totals.items()}


def test_chance_by_hand_on_three_answerable_queries():
    """Class 1 is alone (not answerable); each class-0 query has M = 3 others, R = 2 of its class:
    orders HHM, HMH, MHH give AP@R 1, 1/2, 1/4; recall@5 looks at all 3 and always finds one."""
    chance = chance_metrics(torch.tensor([0, 0, 0, 1]))
    assert chance["precision_at_1"] == pytest.approx(2 / 3)
    assert chance["r_precision"] == pytest.approx(2 / 3)
    assert chance["mean_average_precision_at_r"] == pytest.approx((1 + 0.5 + 0.25) / 3)
    assert chance["recall_at_5"] == pytest.approx(1.0) and chance["recall_at_10"] == pytest.approx(1.0)


@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 2], [0, 1, 1, 2, 2, 2, 2], [3, 3, 0, 1, 2, 2]])
def test_chance_equals_the_mean_over_every_ordering(labels):
    exact = chance_metrics(torch.tensor(labels))
    assert exact == pytest.approx(brute_force_chance(labels, k_recall=(5, 10)), abs=1e-12)


def test_chance_recall_at_k_is_hypergeometric_not_precision_at_1():
    """20 items of 4 classes of 5: M = 19, R = 4; recall@5 = 1 - C(15,5)/C(19,5)."""
    from math import comb

    chance = chance_metrics(torch.arange(4).repeat_interleave(5))
    assert chance["precision_at_1"] == pytest.approx(4 / 19)
    assert chance["recall_at_5"] == pytest.approx(1 - comb(15, 5) / comb(19, 5))
    assert chance["recall_at_10"] == pytest.approx(1 - comb(15, 10) / comb(19, 10))
    assert chance["recall_at_5"] > chance["precision_at_1"]


def test_chance_matches_random_embeddings_on_average():
    """Random directions rank the gallery at random: their mean score approaches the exact chance."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 30 + [1] * 10 + [2] * 5 + [3])
    runs = [retrieval_metrics(torch.randn(len(labels), 64, generator=generator), labels) for _ in range(200)]
    exact = chance_metrics(labels)
    for name in SCALAR_METRICS:
        assert sum(run[name] for run in runs) / len(runs) == pytest.approx(exact[name], abs=0.02), name


def test_per_query_values_average_to_the_summary():
    generator = torch.Generator().manual_seed(2)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])  # class 3 is alone: not answerable
    embeddings = torch.randn(len(labels), 8, generator=generator)
    results = query_results(embeddings, labels, keep=3)
    assert results.answerable.tolist() == [True] * 9 + [False]
    summary = summarize(results)
    for name, values in results.answered().items():
        assert len(values) == 9 and values.mean() == pytest.approx(summary[name])
    assert results.neighbours.shape == (10, 3) and (results.neighbours != torch.arange(10)[:, None]).all()
    assert (results.scores[:, :-1] >= results.scores[:, 1:]).all()  # best first
    assert sum(map(sum, summary["nn_confusion"])) == 10


def test_a_query_subset_scores_those_queries_against_the_whole_gallery():
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 5, (200,), generator=generator)
    embeddings = F.normalize(torch.randn(5, 16, generator=generator)[labels] + torch.randn(200, 16, generator=generator), dim=1)
    whole = query_results(embeddings, labels, 5, keep=1)
    subset = retrieval_metrics(embeddings, labels, 5, max_queries=40, seed=7)
    assert subset == retrieval_metrics(embeddings, labels, 5, max_queries=40, seed=7)  # same seed, same queries
    assert subset != retrieval_metrics(embeddings, labels, 5, max_queries=40, seed=8)
    chosen = torch.randperm(200, generator=torch.Generator().manual_seed(7))[:40].sort().values
    picked = query_results(embeddings, labels, 5, keep=1, queries=chosen)
    for name in SCALAR_METRICS:
        assert torch.equal(picked.values[name], whole.values[name][chosen])  # each query as in the full search
        assert subset[name] == pytest.approx(float(whole.values[name][chosen].mean()))
    assert torch.equal(picked.neighbours, whole.neighbours[chosen])
    assert sum(map(sum, subset["nn_confusion"])) == 40
    assert retrieval_metrics(embeddings, labels, 5, max_queries=500) == retrieval_metrics(embeddings, labels, 5)
