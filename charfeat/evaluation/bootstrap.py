"""Bootstrap intervals over queries: how much a metric would move on another draw of the queries.

A metric is the mean of per-query values, so one resample of the queries (drawn with replacement)
is a vector of counts, and its metric is ``counts @ values / Q``. All resamples share one seeded
draw of counts, so every metric of every row (and every job of a sweep) is resampled on the same
queries: the intervals are paired, and a difference between two rows can be tested directly.
Neighbours are never searched again: this works on the per-query values alone.

numpy only (no torch), so the sweep report can use it on a laptop.
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95
CHUNK = 64  # resamples per count matrix: CHUNK × Q float32


def resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """values [Q, M] (one column per metric) -> [resamples, M]: each column's mean over a
    resample of the Q rows drawn with replacement; the draws depend only on (Q, resamples, seed)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    q = len(values)
    if q == 0:
        raise ValueError("a bootstrap needs at least one query")
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, values.shape[1]))
    for start in range(0, resamples, CHUNK):
        size = min(CHUNK, resamples - start)
        picks = rng.integers(0, q, size=(size, q)) + q * np.arange(size)[:, None]  # row r's picks in [rq, (r+1)q)
        counts = np.bincount(picks.ravel(), minlength=size * q).reshape(size, q)
        out[start:start + size] = counts @ values / q
    return out


def percentile_interval(means: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """[resamples, M] -> [M, 2]: the (1-level)/2 and (1+level)/2 quantiles of each column."""
    return np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=0).T


def intervals(values: dict[str, np.ndarray], resamples: int, seed: int,
              level: float = LEVEL) -> dict[str, tuple[float, float]]:
    """{metric: per-query values [Q]} -> {metric: (low, high)}, the percentile bootstrap interval
    of each metric's mean; every metric resampled on the same queries."""
    names = list(values)
    bounds = percentile_interval(resampled_means(np.stack([values[n] for n in names], axis=1), resamples, seed),
                                 level)
    return {name: (float(low), float(high)) for name, (low, high) in zip(names, bounds)}


def paired_difference_interval(values: np.ndarray, reference: np.ndarray, resamples: int, seed: int,
                               level: float = LEVEL) -> tuple[float, float]:
    """The interval of mean(values - reference) over resamples of the same queries: 0 inside it
    means the two cannot be told apart on these queries."""
    low, high = percentile_interval(resampled_means(np.asarray(values) - np.asarray(reference), resamples, seed),
                                    level)[0]
    return float(low), float(high)
