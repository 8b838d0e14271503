"""Retrieval metrics on embeddings: each item queries all the others (leave-one-out).

precision@1 is what the replaced system reported as "Recall@1"; recall@k counts a query as
answered when a same-class item is among its k nearest; MAP@R and R-precision rank all R
same-class items. Queries are processed in blocks against all references (`query_results` says
how), so no N×N matrix is ever held: memory grows with block × N, not N². Queries whose class has no
other item cannot be answered and are left out, as pytorch-metric-learning does.

The neighbour search runs once (`query_results`): it keeps every query's own value of each metric
and its first few neighbours, so the summary (`summarize`), the bootstrap intervals and the
suspect labels all reuse it and never search again. `chance_per_query` is the exact expected value
of each metric under a uniformly random ranking of the gallery, from the class sizes alone.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from charfeat.config import Metric

SCALAR_METRICS = tuple(Metric.__members__)  # plain names, in table order
RECALL_KS = (1, 5, 10)
# One block of similarity rows per worker thread, in a buffer it reuses. At 256 MB a block at N = 100,000
# is 671 queries: the multiply, which streams the whole gallery once per block, took 34 core-s for
# all 100,000 queries at 1,024-row blocks against 39 at 335 (2,048: 33.5).
BLOCK_BYTES = 2**28


def _block_size(n: int, budget: int = BLOCK_BYTES) -> int:
    """Queries per block, so that one block's similarity rows [block, n] (float32) stay near ``budget``."""
    return max(1, min(4096, budget // (4 * max(n, 1))))


@dataclass
class QueryResults:
    """Each query's result. ``values[metric]`` [Q] float64 (0 where not answerable); ``answerable``
    [Q] bool (its class has another item); ``neighbours``/``scores`` [Q, k]: its k nearest other
    items of the gallery (indices into it) and their cosine similarity, best first. ``labels`` [Q]
    are the queries' labels, ``gallery_labels`` [N] every item's (the queries are gallery items)."""

    labels: torch.Tensor
    answerable: torch.Tensor
    values: dict[str, torch.Tensor]
    neighbours: torch.Tensor
    scores: torch.Tensor
    num_classes: int
    gallery_labels: torch.Tensor

    def answered(self) -> dict[str, np.ndarray]:
        """Per-query values of the answerable queries only, as numpy arrays (the bootstrap's input)."""
        return {name: value[self.answerable].numpy() for name, value in self.values.items()}


@torch.no_grad()
def query_results(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None,
                  keep: int = 10, queries: torch.Tensor | None = None) -> QueryResults:
    """embeddings [N, D] (L2-normalised here; cosine similarity), labels [N] -> the results of the
    items ``queries`` (indices, default all) as queries against all N, keeping each one's first
    ``keep`` neighbours.

    Each query needs its k_max = max(R, 10) best neighbours ranked, R = its class's other items
    (about 10 % of the gallery with 10 classes): `_BlockSearch` finds them without sorting or
    gathering more than that. Blocks of queries run in parallel threads (numpy and the multiply
    release the GIL), each with one torch thread.
    """
    embeddings = F.normalize(embeddings.detach().float().cpu(), dim=1)
    labels = labels.detach().long().cpu()
    n = len(labels)
    if n < 2:
        raise ValueError(f"retrieval metrics need at least 2 embeddings, got {n}")
    num_classes = num_classes or int(labels.max()) + 1
    queries = torch.arange(n) if queries is None else queries.detach().long().cpu()
    query_labels = labels[queries]
    r_all = torch.bincount(labels, minlength=num_classes)[query_labels] - 1  # same-class references
    keep = min(keep, n - 1)
    q = len(queries)
    values = {name: torch.zeros(q, dtype=torch.float64) for name in SCALAR_METRICS}
    neighbours = torch.zeros(q, keep, dtype=torch.long)
    scores = torch.zeros(q, keep)
    k_max = min(n - 1, max(int(r_all.max()), max(RECALL_KS), keep))
    search = _BlockSearch(embeddings, labels, num_classes, k_max, keep)
    by_class = torch.argsort(query_labels, stable=True)  # a block's queries share few classes
    block = _block_size(n)

    def run(start: int) -> None:
        rows = by_class[start:start + block]
        block_values, neighbours[rows], scores[rows] = search(queries[rows])
        for name, value in block_values.items():
            values[name][rows] = value

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one torch thread per block: the blocks run side by side
    try:
        with ThreadPoolExecutor(max(1, min(threads, -(-q // block))), thread_name_prefix="charfeat-eval") as pool:
            list(pool.map(run, range(0, q, block)))
    finally:
        torch.set_num_threads(threads)
    return QueryResults(query_labels, r_all > 0, values, neighbours, scores, num_classes, labels)


class _BlockSearch:
    """A block of queries against the whole gallery -> ({metric: [B]}, neighbours [B, keep], scores).

    A row's k_max best values are ranked without partitioning the whole row: a strided sample of
    the row bounds its k_max-th best from below (`_threshold`), and only the columns at or above
    that bound (about 1.2 k_max) are gathered; a row where fewer than k_max reach it is redone with
    every column, so the result is exact whatever the sample. The gallery's columns are sorted by
    class, so a query's same-class items are one slice of its row, and of the gathered columns.
    Each gathered similarity's lowest mantissa bit is then set to "same class" (a change of one unit
    in the last place, below the multiply's own rounding), so a partition and a sort of the k_max
    best values give the ranked hits without gathering an index or a label (a tie within one unit
    in the last place may rank the two either way). The ``keep`` nearest are taken first, exactly,
    from the gathered columns.
    """

    CHUNK = 64  # columns per chunk for the nearest neighbours
    SAMPLE = 2048  # columns sampled per row for the bound

    def __init__(self, embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int, k_max: int, keep: int):
        self.order = torch.argsort(labels, stable=True)
        self.gallery = embeddings[self.order].contiguous()
        self.position = torch.empty_like(self.order)
        self.position[self.order] = torch.arange(len(labels))  # item -> its column
        self.counts = torch.bincount(labels, minlength=num_classes)
        self.ends = self.counts.cumsum(0)
        self.begins = self.ends - self.counts
        self.labels, self.k_max, self.keep = labels, k_max, keep
        self.buffers = threading.local()

    def _buffer(self, name: str, size: int) -> np.ndarray:
        """This thread's float32 buffer ``name`` of at least ``size`` values, reused from block to
        block: a fresh array of this size per block costs its page faults (~15 % of the multiply's
        time, and the threads serialise on them)."""
        buffer = getattr(self.buffers, name, None)
        if buffer is None or len(buffer) < size:
            buffer = np.empty(size, np.float32)
            setattr(self.buffers, name, buffer)
        return buffer[:size]

    def _similarities(self, items: torch.Tensor) -> np.ndarray:
        """[B, n] similarities, written into this thread's reused buffer."""
        out = self._buffer("sims", len(items) * len(self.labels)).reshape(len(items), len(self.labels))
        torch.matmul(self.gallery[self.position[items]], self.gallery.T, out=torch.from_numpy(out))
        return out

    def __call__(self, items: torch.Tensor):
        sims = self._similarities(items)
        rows, itself = np.arange(len(items)), self.position[items].numpy()
        sims[rows, itself] = -np.inf  # an item is not its own neighbour
        item_labels = self.labels[items]
        begins, ends = self.begins[item_labels].numpy(), self.ends[item_labels].numpy()
        ranked = self._ranked(sims, rows, self._threshold(sims), begins, ends)
        failed = np.flatnonzero(ranked[3])
        if len(failed):  # the sample's bound kept fewer than k_max: these rows keep every column
            redone = self._ranked(sims, failed, np.full(len(failed), _LOWEST), begins[failed], ends[failed])
            for whole, part in zip(ranked[:3], redone[:3]):
                whole[failed] = part
        hits, nearest, scores = ranked[:3]
        r = self.counts[item_labels] - 1
        return _score_block(hits, r.numpy()), self.order[torch.from_numpy(nearest)], torch.from_numpy(scores)

    def _threshold(self, sims: np.ndarray) -> np.ndarray:
        """Per row, a value that about k_max (1 + 4 / sqrt(expected)) of its columns reach, from a
        strided sample of ``SAMPLE`` columns (the lowest finite value where the sample is too small)."""
        b, n = sims.shape
        step = max(1, n // self.SAMPLE)
        sample = sims[:, ::step]
        expected = self.k_max * sample.shape[1] / n
        rank = int(np.ceil(expected + 4 * np.sqrt(expected))) + 1
        if rank >= sample.shape[1]:
            return np.full(b, _LOWEST)
        return np.partition(sample, sample.shape[1] - rank, axis=1)[:, sample.shape[1] - rank]

    def _ranked(self, sims: np.ndarray, rows: np.ndarray, bound: np.ndarray, begins: np.ndarray, ends: np.ndarray):
        """For ``rows`` of ``sims``: hits [len(rows), k_max] (0/1, best first), the ``keep`` nearest
        columns and their similarities, and whether the row's columns at or above ``bound`` were
        fewer than k_max or not all above the k_max-th best (then redo the row with a lower bound).

        Only the columns at or above the bound are gathered, ascending, so a row's same-class ones
        stay one slice [low, high); -inf pads the rows to one width, in this thread's reused buffer."""
        k = self.k_max
        mask = np.empty(sims.shape[1], bool)
        columns = []
        for row, value in zip(rows, bound):
            np.greater_equal(sims[row], value, out=mask)
            columns.append(np.flatnonzero(mask))
        width = max(max(len(c) for c in columns), k)
        values = self._buffer("gathered", len(rows) * width).reshape(len(rows), width)
        low, high = np.empty(len(rows), np.int64), np.empty(len(rows), np.int64)
        for i, (row, c) in enumerate(zip(rows, columns)):
            np.take(sims[row], c, out=values[i, :len(c)], mode="clip")  # "raise" would copy through a buffer
            values[i, len(c):] = -np.inf
            low[i], high[i] = np.searchsorted(c, (begins[i], ends[i]))
        positions, scores = self._nearest(values)
        # a row with fewer than ``keep`` columns has fewer than k_max: it fails and is redone
        nearest = np.stack([c[p] if len(c) >= self.keep else np.zeros_like(p) for c, p in zip(columns, positions)])
        position = np.arange(width)
        bits = values.view(np.int32)
        np.bitwise_and(bits, -2, out=bits)
        np.bitwise_or(bits, (position >= low[:, None]) & (position < high[:, None]), out=bits, casting="unsafe")
        values.partition(width - k, axis=1)  # the k best of each row, unordered, at its end
        # Outside the kept columns a marked value is at most the bound (one unit in the last place
        # above a smaller value): the k-th best kept must lie strictly above it.
        failed = values[:, width - k] <= bound
        hits = np.sort(values[:, width - k:], axis=1)[:, ::-1].view(np.int32) & 1
        return hits, nearest, scores, failed

    def _nearest(self, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Columns [B, keep] and similarities of each row's ``keep`` largest, best first.

        Chunk c of a row holds the columns c, c + stride, c + 2 stride, ... (the maxima of all chunks
        are then one vectorised pass over the row); the last ``n % CHUNK`` columns are candidates of
        their own."""
        b, n, keep = *sims.shape, self.keep
        stride = n // self.CHUNK
        maxima = sims[:, :stride * self.CHUNK].reshape(b, self.CHUNK, stride).max(axis=1) if stride else \
            np.empty((b, 0), sims.dtype)
        best_chunks = np.argpartition(maxima, stride - keep, axis=1)[:, stride - keep:] if keep < stride else \
            np.broadcast_to(np.arange(stride), (b, stride))
        columns = np.concatenate([(best_chunks[:, :, None] + stride * np.arange(self.CHUNK)).reshape(b, -1),
                                  np.broadcast_to(np.arange(stride * self.CHUNK, n), (b, n - stride * self.CHUNK))],
                                 axis=1)
        candidates = np.take_along_axis(sims, columns, axis=1)
        best = np.argpartition(-candidates, keep - 1, axis=1)[:, :keep]
        best = np.take_along_axis(best, np.argsort(-np.take_along_axis(candidates, best, axis=1), axis=1), axis=1)
        return np.take_along_axis(columns, best, axis=1), np.take_along_axis(candidates, best, axis=1)


_LOWEST = np.finfo(np.float32).min  # below every similarity, above the own column's -inf


def _runs(values: torch.Tensor):
    """(first, last, value) of each run of equal consecutive values."""
    values = values.numpy()
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return [(int(a), int(b), int(values[a])) for a, b in zip(starts, np.r_[starts[1:], len(values)])]


def _score_block(hits: np.ndarray, r: np.ndarray) -> dict[str, torch.Tensor]:
    """Each query's metrics [B] (float64) from its ranked hits [B, k_max] (0/1) and its R [B]."""
    out = {"precision_at_1": hits[:, 0].astype(np.float64),
           "recall_at_5": hits[:, :5].any(1).astype(np.float64),
           "recall_at_10": hits[:, :10].any(1).astype(np.float64),
           "mean_average_precision_at_r": np.zeros(len(r)), "r_precision": np.zeros(len(r))}
    for first, last, rq in _runs(torch.from_numpy(r)):
        if rq == 0:
            continue
        within = hits[first:last, :rq].astype(np.float32)
        found = np.cumsum(within, axis=1)  # hits among the first j: exact in float32 below 2**24
        out["mean_average_precision_at_r"][first:last] = (found * within) @ (1.0 / np.arange(1, rq + 1,
                                                                                              dtype=np.float32)) / rq
        out["r_precision"][first:last] = found[:, -1] / rq
    return {name: torch.from_numpy(np.where(r == 0, 0.0, value)) for name, value in out.items()}


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
    confusion.index_put_((labels, results.gallery_labels[results.neighbours[:, 0]]), torch.ones(len(labels), dtype=torch.long),
                         accumulate=True)
    out["nn_confusion"] = confusion.tolist()
    return out


def retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None,
                      max_queries: int | None = None, seed: int = 0) -> dict:
    """embeddings [N, D], labels [N] -> the summary of `query_results` (see `summarize`); with
    ``max_queries`` < N, of that many queries drawn with ``seed`` (the gallery stays all N)."""
    queries = None
    if max_queries is not None and max_queries < len(labels):
        generator = torch.Generator().manual_seed(seed)
        queries = torch.randperm(len(labels), generator=generator)[:max_queries].sort().values
    return summarize(query_results(embeddings, labels, num_classes, keep=1, queries=queries))


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
