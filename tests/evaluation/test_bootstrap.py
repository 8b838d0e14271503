"""Bootstrap intervals over queries: nominal coverage in simulation, seeded, paired differences."""

import numpy as np
import pytest

from charfeat.evaluation.bootstrap import intervals, paired_difference_interval, resampled_means


def coverage(draw, truth: float, trials: int = 400, queries: int = 100, resamples: int = 1000) -> float:
    """Share of trials whose 95 % interval, from ``queries`` per-query values, contains ``truth``."""
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(trials):
        low, high = intervals({"m": draw(rng, queries)}, resamples, seed=trial)["m"]
        covered += low <= truth <= high
    return covered / trials


def test_precision_at_1_interval_covers_the_true_value_at_about_95_percent():
    """Each query is right with probability 0.8 (98 queries, as in the replaced system's val set)."""
    rate = coverage(lambda rng, n: (rng.random(n) < 0.8).astype(float), truth=0.8, queries=98)
    assert 0.91 <= rate <= 0.98, rate


def test_map_like_interval_covers_the_true_value_at_about_95_percent():
    """Continuous per-query values (Beta(2, 3): mean 0.4), as MAP@R gives."""
    rate = coverage(lambda rng, n: rng.beta(2, 3, n), truth=0.4, queries=150)
    assert 0.91 <= rate <= 0.98, rate


def test_intervals_are_seeded_paired_and_shrink_with_more_queries():
    rng = np.random.default_rng(1)
    values = {"a": rng.random(400), "b": rng.random(400)}
    assert intervals(values, 500, seed=3) == intervals(values, 500, seed=3)
    assert intervals(values, 500, seed=3) != intervals(values, 500, seed=4)
    both = resampled_means(np.stack([values["a"], values["a"]], axis=1), 200, seed=0)
    np.testing.assert_array_equal(both[:, 0], both[:, 1])  # one draw of queries for every column
    small = intervals({"a": values["a"][:100]}, 1000, seed=0)["a"]
    large = intervals({"a": np.tile(values["a"][:100], 16)}, 1000, seed=0)["a"]
    assert (large[1] - large[0]) == pytest.approx((small[1] - small[0]) / 4, rel=0.2)  # 1/sqrt(16)


def test_paired_bootstrap_separates_a_small_consistent_gain_that_overlapping_intervals_miss():
    """B equals A except on 6 % of the 300 queries, where B is right and A is wrong: the two
    intervals overlap, the paired difference's interval does not contain 0."""
    rng = np.random.default_rng(2)
    a = (rng.random(300) < 0.6).astype(float)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:18]] = 1.0
    ia, ib = intervals({"a": a}, 1000, 0)["a"], intervals({"b": b}, 1000, 0)["b"]
    assert ib[0] < ia[1]  # overlapping
    low, high = paired_difference_interval(b, a, 1000, 0)
    assert low > 0
    low, high = paired_difference_interval(a + rng.normal(0, 0.01, 300), a, 1000, 0)
    assert low < 0 < high  # noise only: not distinguishable


def test_no_queries_is_an_error():
    with pytest.raises(ValueError, match="at least one query"):
        intervals({"m": np.zeros(0)}, 10, 0)
