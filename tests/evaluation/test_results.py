"""The results table, metrics.json and the scoring of a split's rows (baselines, chance, intervals)."""

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from charfeat.evaluation.metrics import SCALAR_METRICS, chance_metrics, retrieval_metrics
from charfeat.evaluation.results import format_table, tracked, write_metrics
from charfeat.evaluation.scoring import score_rows


def test_metrics_json_holds_rounded_python_floats(tmp_path):
    float32 = torch.tensor([0.7, 0.125]).float()
    write_metrics(tmp_path / "metrics.json", {"trained": {"precision_at_1": float(float32[0]),
                                                          "recall_at_5": np.float32(0.7),
                                                          "per_class_precision_at_1": {"a": float(float32[1])}}})
    text = (tmp_path / "metrics.json").read_text()
    assert "0.699999988" not in text
    metrics = json.loads(text)
    assert metrics["trained"]["precision_at_1"] == 0.7 and metrics["trained"]["recall_at_5"] == 0.7
    assert metrics["trained"]["per_class_precision_at_1"] == {"a": 0.125}


def scores(value: float) -> dict:
    return dict.fromkeys(SCALAR_METRICS, value)


def test_the_table_header_names_the_metrics_not_a_row():
    """evaluate's rows are "model", "backbone", "chance": "model" is a row, never the header."""
    lines = format_table({"model": scores(0.5), "backbone": scores(0.25), "chance": scores(0.125)}).splitlines()
    assert lines[0].split() == ["P@1", "R@5", "R@10", "MAP@R", "R-prec"]
    assert [line.split()[0] for line in lines[1:]] == ["model", "backbone", "chance"]
    titled = format_table({"model": scores(0.5)}, "val: 80 images").splitlines()
    assert titled[0].split()[:3] == ["val:", "80", "images"]


def test_the_table_shows_each_value_with_half_its_interval():
    results = {"trained": scores(0.412), "trained_ci95": {m: [0.362, 0.462] for m in SCALAR_METRICS},
               "chance": scores(0.1), "chance_ci95": {m: [0.1, 0.1] for m in SCALAR_METRICS}}
    lines = format_table(results).splitlines()
    assert lines[1].split() == ["trained"] + ["0.412", "±0.050"] * 5
    assert lines[2].split() == ["chance"] + ["0.100", "±0"] * 5
    summary = tracked(results)
    assert summary["trained/precision_at_1"] == 0.412 and summary["trained/r_precision_ci95_high"] == 0.462


def clusters(seed: int = 0, n: int = 120):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(n // 4)
    embeddings = F.normalize(torch.randn(4, 16, generator=generator)[labels] * 1.5
                             + torch.randn(n, 16, generator=generator), dim=1)
    return embeddings, labels


def test_every_row_and_chance_get_intervals_on_the_same_queries():
    embeddings, labels = clusters()
    labels[0] = 4  # a class of one: not answerable, by any row
    noise = torch.randn(len(labels), 16, generator=torch.Generator().manual_seed(9))
    scored = score_rows({"trained": embeddings, "backbone": noise}, labels, list("abcde"), bootstrap=500, seed=0)
    results = scored.results
    assert list(results) == ["trained", "backbone", "chance", "trained_ci95", "backbone_ci95", "chance_ci95"]
    plain = retrieval_metrics(embeddings, labels, 5)
    assert results["trained"]["precision_at_1"] == pytest.approx(plain["precision_at_1"])
    assert results["chance"] == pytest.approx(chance_metrics(labels, 5))
    assert int(scored.answerable.sum()) == len(labels) - 1
    for row in ("trained", "backbone", "chance"):
        assert len(scored.per_query[row]["precision_at_1"]) == len(labels) - 1
        for metric, (low, high) in results[f"{row}_ci95"].items():
            assert low <= results[row][metric] <= high, (row, metric)
    width = results["trained_ci95"]["precision_at_1"]
    assert 0.02 < width[1] - width[0] < 0.25  # about 2 x 1.96 x sqrt(p(1-p)/119)
    assert results["trained"]["precision_at_1"] > results["backbone_ci95"]["precision_at_1"][1]
    again = score_rows({"trained": embeddings, "backbone": noise}, labels, list("abcde"), bootstrap=500, seed=0)
    assert again.results == results  # seeded


def test_no_intervals_with_zero_resamples():
    embeddings, labels = clusters()
    results = score_rows({"model": embeddings}, labels, list("abcd"), bootstrap=0, seed=0).results
    assert list(results) == ["model", "chance"]
    with pytest.raises(ValueError, match="eval.bootstrap must be >= 0"):
        score_rows({"model": embeddings}, labels, list("abcd"), bootstrap=-1, seed=0)
