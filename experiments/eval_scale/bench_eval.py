"""Evaluation at scale: retrieval metrics of N embeddings, time and peak memory against the GEMM
floor (the N x N similarity multiply alone), what the exact chance row and the bootstrap intervals
add, and a per-epoch evaluation on a subset of queries (trainer.eval_max_queries), in one run.

    python experiments/eval_scale/bench_eval.py --n 100000 --dim 256 --classes 10
"""

import argparse
import resource
import time

import torch
from torch.nn import functional as F

from charfeat.evaluation.bootstrap import intervals
from charfeat.evaluation.metrics import chance_per_query, query_results, retrieval_metrics, summarize


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def gemm_floor(embeddings: torch.Tensor, block: int = 2048, reuse: bool = False) -> None:
    """What any exact evaluation must at least do: every query's similarity to every item. With
    ``reuse``, into one output buffer (no page faults for a fresh block: the lower floor)."""
    out = torch.empty(block, len(embeddings)) if reuse else None
    for start in range(0, len(embeddings), block):
        rows = embeddings[start:start + block]
        if reuse:
            torch.matmul(rows, embeddings.T, out=out[:len(rows)])
        else:
            rows @ embeddings.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--max-queries", type=int, default=10_000, help="the per-epoch subset to time")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, args.classes, (args.n,), generator=generator)
    centres = torch.randn(args.classes, args.dim, generator=generator)
    embeddings = F.normalize(centres[labels] + 4.0 * torch.randn(args.n, args.dim, generator=generator), dim=1)
    before = peak_rss_gib()
    _, gemm = timed(gemm_floor, embeddings)
    _, gemm_reused = timed(gemm_floor, embeddings, reuse=True)
    queries, search = timed(query_results, embeddings, labels, args.classes)
    result, summary = timed(summarize, queries)
    after_search = peak_rss_gib()
    chance, chance_s = timed(chance_per_query, labels, args.classes)
    mask = queries.answerable
    values = {f"model/{k}": v for k, v in queries.answered().items()}
    values.update({f"chance/{k}": v[mask].numpy() for k, v in chance.items()})
    bounds, boot_s = timed(intervals, values, args.bootstrap, 0)
    evaluation = search + summary
    _, subset = timed(retrieval_metrics, embeddings, labels, args.classes, max_queries=args.max_queries)
    print(f"n={args.n} dim={args.dim} classes={args.classes} threads={torch.get_num_threads()}")
    print(f"embeddings: {embeddings.numel() * 4 / 2**30:.2f} GiB; peak RSS before metrics {before:.2f} GiB, "
          f"after the search {after_search:.2f} GiB, after the intervals {peak_rss_gib():.2f} GiB")
    print(f"a full N x N float32 matrix would be {args.n**2 * 4 / 2**30:.1f} GiB")
    print(f"GEMM floor (the similarity multiply alone, 2048-row blocks): {gemm:.1f} s; "
          f"into one reused output buffer: {gemm_reused:.1f} s")
    print(f"evaluation (neighbour search + summary): {evaluation:.1f} s ({args.n / evaluation:,.0f} queries/s), "
          f"{evaluation / gemm:.2f} x the GEMM floor ({evaluation / gemm_reused:.2f} x the reused-buffer floor)")
    print(f"per-epoch evaluation of {args.max_queries:,} seeded queries against all {args.n:,}: {subset:.1f} s "
          f"({subset / evaluation:.2f} x the full one)")
    print(f"exact chance: {chance_s:.2f} s; bootstrap ({args.bootstrap} resamples, {len(values)} columns: "
          f"model and chance x 5 metrics): {boot_s:.2f} s")
    print(f"intervals and chance add {100 * (chance_s + boot_s) / evaluation:.1f} % to the evaluation's time")
    print({k: round(v, 4) for k, v in result.items() if isinstance(v, float)})
    print({k: [round(b, 4) for b in v] for k, v in bounds.items() if k.endswith(("precision_at_1", "at_r"))})


if __name__ == "__main__":
    main()
