"""Images/s from a local S3 endpoint with a fixed latency per request: sequential GETs vs charfeat's
loader (cold) vs charfeat's loader on a warm disk cache. Prints ratios measured in this one run.

    .venv/bin/python experiments/s3_loader/bench.py --images 256 --latency 0.025
"""

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

from charfeat.testing.s3 import FaultyProxy, MotoServer  # noqa: E402

BUCKET = "charfeat-bench"


def serve_proxy(upstream_port: int, latency: float, conn) -> None:
    """In its own process, so the proxy's threads do not share the loader's interpreter."""
    proxy = FaultyProxy(upstream_port, latency=latency)
    conn.send(proxy.url)
    conn.recv()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.025, help="seconds added to every request")
    parser.add_argument("--batch", type=int, default=32, help="images per load_images call")
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()

    from charfeat.config import S3DataConfig, SampleDataConfig, build
    from charfeat.data.images import decode
    from charfeat.upload import plan, upload

    work = Path(tempfile.mkdtemp(prefix="charfeat-bench-"))
    sample = build(SampleDataConfig, cache_dir=str(work / "sample"), num_classes=8, train_per_class=args.images // 8,
                   val_per_class=2, image_size=224)
    sample.ensure_generated()
    server = MotoServer(auth=False)
    os.environ.update(server.credentials, AWS_EC2_METADATA_DISABLED="true")
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    upload(plan(sample.root / "images", [sample.root / "train.jsonl", sample.root / "val.jsonl"],
                "fashion_style", 0), BUCKET, "img/", client)

    parent, child = multiprocessing.get_context("fork").Pipe()
    proxy = multiprocessing.get_context("fork").Process(target=serve_proxy, args=(server.port, args.latency, child))
    proxy.start()
    url = parent.recv()
    try:
        names = [r.filename for r in sample.records("train")]
        slow = server.client(url)
        started = time.perf_counter()
        for name in names:
            decode(slow.get_object(Bucket=BUCKET, Key="img/" + name)["Body"].read())
        sequential = len(names) / (time.perf_counter() - started)

        def loader_rate(cache: Path) -> tuple[float, float]:
            """(images/s of the loading loop, seconds of one-time setup: clients, JSONL, listing)."""
            began = time.perf_counter()
            # verify_images=none: the up-front check would fetch every image during setup
            data = build(S3DataConfig, bucket=BUCKET, root=str(sample.root), prefix="img/", endpoint_url=url,
                         cache_dir=str(cache), max_workers=args.workers, verify_images="none")
            records = data.records("train")
            loading = time.perf_counter()
            for start in range(0, len(records), args.batch):
                data.load_images("train", records[start:start + args.batch])
            return len(records) / (time.perf_counter() - loading), loading - began

        cold, cold_setup = loader_rate(work / "cache")
        warm, warm_setup = loader_rate(work / "cache")
    finally:
        parent.send("stop")
        proxy.join(timeout=5)
        server.stop()
    print(f"{len(names)} images of 224 px, {args.latency * 1000:.0f} ms added per request, "
          f"{args.workers} workers, batches of {args.batch}")
    print(f"sequential GETs:        {sequential:8.1f} images/s   1.0x")
    print(f"charfeat loader (cold): {cold:8.1f} images/s  {cold / sequential:5.1f}x  (target >= 5x); "
          f"setup {cold_setup:.2f} s")
    print(f"charfeat loader (warm): {warm:8.1f} images/s  {warm / sequential:5.1f}x  (target >= 20x); "
          f"setup {warm_setup:.2f} s")
    n = len(names)
    print(f"with setup counted:     cold {n / (n / cold + cold_setup) / sequential:.1f}x, "
          f"warm {n / (n / warm + warm_setup) / sequential:.1f}x")

if __name__ == "__main__":
    main()
