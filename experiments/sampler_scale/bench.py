"""One epoch of P×K sampling at 1k to 1M labelled images: charfeat's sampler vs PML's MPerClassSampler.

    python experiments/sampler_scale/bench.py [--sizes 1000 10000 100000 1000000] [--classes 8] [--pml-max 100000]

Prints seconds per epoch (median of --repeats), nanoseconds per image, and the growth exponent
between consecutive sizes (1.0 = linear). PML is timed up to --pml-max images only: its epoch is
quadratic and takes minutes beyond that.
"""

import argparse
import math
import statistics
import time

import numpy as np


def epoch_seconds(make, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sampler = make()
        start = time.perf_counter()
        for _ in sampler:
            pass
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pml_sampler(labels: np.ndarray, p: int, k: int):
    from pytorch_metric_learning.samplers import MPerClassSampler

    batches = math.ceil(len(labels) / (p * k))
    return MPerClassSampler(labels, m=k, batch_size=p * k, length_before_new_iter=batches * p * k)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--p", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pml-max", type=int, default=100_000)
    args = parser.parse_args()

    from charfeat.config import PKSamplerConfig, build

    print(f"one epoch (about one pass: images / (p*k) batches), p={args.p} k={args.k}, {args.classes} classes")
    print(f"{'images':>9} {'charfeat s':>11} {'ns/image':>9} {'exponent':>9} {'PML s':>9} {'PML/charfeat':>13}")
    previous = None
    for n in args.sizes:
        labels = np.random.default_rng(0).integers(0, args.classes, size=n)
        ours = epoch_seconds(lambda: build(PKSamplerConfig, p=args.p, k=args.k)(labels, seed=0), args.repeats)
        exponent = math.log(ours / previous[1]) / math.log(n / previous[0]) if previous else float("nan")
        previous = (n, ours)
        pml = epoch_seconds(lambda: pml_sampler(labels, args.p, args.k), 1) if n <= args.pml_max else None
        print(f"{n:>9} {ours:>11.4f} {ours / n * 1e9:>9.0f} {exponent:>9.2f} "
              f"{'' if pml is None else f'{pml:.3f}':>9} {'' if pml is None else f'{pml / ours:.1f}x':>13}")


if __name__ == "__main__":
    main()
