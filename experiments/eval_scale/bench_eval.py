"""Evaluation at scale: retrieval metrics of N embeddings, time and peak memory, in one run.

    python experiments/eval_scale/bench_eval.py --n 100000 --dim 256 --classes 10
"""

import argparse
import resource
import time

import torch
from torch.nn import functional as F

from charfeat.evaluation.metrics import retrieval_metrics


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, args.classes, (args.n,), generator=generator)
    centres = torch.randn(args.classes, args.dim, generator=generator)
    embeddings = F.normalize(centres[labels] + 4.0 * torch.randn(args.n, args.dim, generator=generator), dim=1)
    before = peak_rss_gib()
    start = time.perf_counter()
    result = retrieval_metrics(embeddings, labels)
    seconds = time.perf_counter() - start
    data_gib = embeddings.numel() * 4 / 2**30
    print(f"n={args.n} dim={args.dim} classes={args.classes} threads={torch.get_num_threads()}")
    print(f"embeddings: {data_gib:.2f} GiB; peak RSS before metrics {before:.2f} GiB, after {peak_rss_gib():.2f} GiB")
    print(f"a full N x N float32 matrix would be {args.n**2 * 4 / 2**30:.1f} GiB")
    print(f"time: {seconds:.1f} s ({args.n / seconds:,.0f} queries/s)")
    print({k: round(v, 4) for k, v in result.items() if isinstance(v, float)})


if __name__ == "__main__":
    main()
