"""Resident memory of opening a feature cache of --cached items of --dim and reading 10 of them.

    .venv/bin/python experiments/embed_memory/cache_index.py --cached 100000 --dim 2048

The cache is filled once under --work (shards of 1,024, as runs write them); each measurement is a
fresh process, so the same script measures another checkout with PYTHONPATH=<checkout>.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

FINGERPRINT = {"model": "a Qwen3-VL-2B-sized feature", "bench": "cache_index"}


def memory() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 2**20, int(fields["VmHWM"].split()[0]) / 2**20


def fill(root: Path, count: int, dim: int) -> None:
    import torch

    from charfeat.features.cache import FeatureCache

    cache = FeatureCache(root, FINGERPRINT, dim=dim)
    generator = torch.Generator().manual_seed(0)
    for start in range(0, count, 1024):
        n = min(1024, count - start)
        cache.put([int(start + i).to_bytes(32, "big") for i in range(n)], torch.randn(n, dim, generator=generator))
        cache.flush()


def measure(root: Path, count: int, dim: int) -> dict:
    import charfeat
    from charfeat.features.cache import FeatureCache

    before = memory()
    started = time.perf_counter()
    cache = FeatureCache(root, FINGERPRINT, dim=dim)
    found = cache.get([int(i).to_bytes(32, "big") for i in range(0, count, count // 10)])
    after = memory()
    return {"code": str(Path(charfeat.__file__).parent), "items": len(cache), "found": sum(f is not None for f in found),
            "seconds": time.perf_counter() - started, "rss_gib": after[0] - before[0], "peak_gib": after[1] - before[1]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cached", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=2048, help="feature width: 2048 is Qwen3-VL-2B's hidden size")
    parser.add_argument("--work", type=Path, default=Path("/tmp/charfeat-cache-index"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = args.work / f"{args.cached}x{args.dim}"
    if args.child:
        return print(json.dumps(measure(root, args.cached, args.dim)))
    if not root.is_dir():
        fill(root, args.cached, args.dim)
    out = subprocess.run([sys.executable, __file__, "--cached", str(args.cached), "--dim", str(args.dim), "--work",
                          str(args.work), "--child"], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.splitlines()[-1])
    raw = args.cached * args.dim * 4 / 2**30
    print(f"feature cache of {result['items']:,} items x {args.dim} float32 ({raw:.2f} GiB of features; code: "
          f"{result['code']}): opened and {result['found']} items read in {result['seconds']:.1f} s; "
          f"RSS +{result['rss_gib']:.3f} GiB, peak +{result['peak_gib']:.3f} GiB "
          f"({result['peak_gib'] / raw:.1%} of the features)")


if __name__ == "__main__":
    main()
