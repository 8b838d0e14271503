"""Images/s the input pipeline (charfeat.data.loader) delivers with 0, 1 and 2 worker processes, from
local files and from S3 behind a fixed latency, against what the model consumes; for the tiny
processor's pixel budget and for a real Qwen3-VL's (448² = 200,704 pixels). Every figure below
is measured in this one run.

    .venv/bin/python experiments/input_pipeline/bench.py --images 256 --size 640 --latency 0.025

Each figure is the fastest of ``--repeats`` tries. Columns: "pipeline" is the loader alone (fetch, decode, processor; the batches are dropped);
"model" is the tiny model's forward (no gradients, as in feature extraction) on batches prepared
beforehand; "end to end" is feature extraction through the pipeline (FeatureExtractor, no cache),
which is what a user waits for: with workers, loading overlaps the model.
"""

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

BUCKET = "charfeat-bench"
CPU = torch.device("cpu")
REAL_BUDGET = (65536, 200704)  # Qwen3-VL's processor minimum, charfeat's default maximum (448²)


def serve_proxy(upstream_port: int, latency: float, conn) -> None:
    """In its own process, so the proxy's threads do not share the loader's interpreter."""
    from charfeat.testing.s3 import FaultyProxy

    proxy = FaultyProxy(upstream_port, latency=latency)
    conn.send(proxy.url)
    conn.recv()


REPEATS = 3


def rate(n: int, run) -> float:
    """Images/s of ``run`` (which handles ``n`` images): the best of `REPEATS` tries, the one least
    disturbed by whatever else the machine runs."""
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=640, help="pixels per side of the JPEG images")
    parser.add_argument("--latency", type=float, default=0.025, help="seconds added to every S3 request")
    parser.add_argument("--batch", type=int, default=32, help="images per batch (a P×K batch, an extraction batch)")
    parser.add_argument("--repeats", type=int, default=3, help="tries per figure; the fastest counts")
    args = parser.parse_args()
    global REPEATS
    REPEATS = args.repeats
    torch.set_num_threads(2)

    from charfeat.config import BackboneConfig, S3DataConfig, SampleDataConfig, build
    from charfeat.data.loader import InputGroups, input_batches
    from charfeat.features.extract import FeatureExtractor
    from charfeat.testing.s3 import MotoServer
    from charfeat.upload import plan, upload

    work = Path(tempfile.mkdtemp(prefix="charfeat-pipeline-"))
    sample = build(SampleDataConfig, cache_dir=str(work / "sample"), num_classes=8,
                   train_per_class=args.images // 8, val_per_class=2, image_size=args.size, num_workers=0)
    sample.ensure_generated()
    server = MotoServer(auth=False)
    os.environ.update(server.credentials, AWS_EC2_METADATA_DISABLED="true")
    server.client().create_bucket(Bucket=BUCKET)
    upload(plan(sample.root / "images", [sample.root / "train.jsonl", sample.root / "val.jsonl"],
                "fashion_style", 0), BUCKET, "img/", server.client())
    parent, child = multiprocessing.get_context("fork").Pipe()
    proxy = multiprocessing.get_context("fork").Process(target=serve_proxy, args=(server.port, args.latency, child))
    proxy.start()
    url = parent.recv()

    from charfeat.models.backbone.tiny import build_random_qwen3_vl

    model_dir = work / "tiny"
    build_random_qwen3_vl(str(model_dir), "tiny")

    def source(kind: str, workers: int):
        if kind == "local":
            return build(SampleDataConfig, cache_dir=str(work / "sample"), num_classes=8,
                         train_per_class=args.images // 8, val_per_class=2, image_size=args.size,
                         num_workers=workers, verify_images="none")
        return build(S3DataConfig, bucket=BUCKET, root=str(sample.root), prefix="img/", endpoint_url=url,
                     cache_dir=None, verify_images="none", num_workers=workers)

    print(f"{args.images} JPEG images of {args.size}x{args.size} px, batches of {args.batch}; S3: moto behind a "
          f"proxy adding {args.latency * 1000:.0f} ms per request, no disk cache; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, 2 threads in the training process, "
          "1 per worker\n")
    try:
        for label, (low, high) in (("tiny processor (its own budget)", (None, None)),
                                   ("real-size budget (65,536..200,704 px)", REAL_BUDGET)):
            backbone = build(BackboneConfig, name_or_path=str(model_dir), dtype="float32", min_pixels=low,
                             max_pixels=high, feature_cache=None)
            data = source("local", 0)
            records = data.records("train")
            groups = [list(range(i, min(i + args.batch, len(records)))) for i in range(0, len(records), args.batch)]
            texts = [None] * len(records)
            prepared = [backbone.preprocess(data.load_images("train", [records[i] for i in g])) for g in groups]
            tokens = prepared[0]["input_ids"].shape[1]
            with torch.no_grad():
                backbone.pool(**prepared[0])  # warm-up
                model = rate(len(records), lambda: [backbone.pool(**inputs) for inputs in prepared])
            print(f"{label}: {tokens} tokens per input row; the tiny model consumes {model:.0f} images/s")
            print(f"  {'source':<7} {'workers':>7} {'pipeline':>12} {'end to end':>12} {'pipeline/model':>15}")
            for kind in ("local", "s3"):
                for workers in (0, 1, 2):
                    data = source(kind, workers)
                    records = data.records("train")
                    dataset = InputGroups(data, "train", records, texts, groups, backbone.encoder, args.batch, None)
                    pipeline = rate(len(records), lambda: [chunks for chunks in input_batches(dataset, CPU)])
                    extractor = FeatureExtractor(backbone, args.batch, CPU)
                    end_to_end = rate(len(records), lambda: extractor.extract(data, "train", records))
                    data.close()
                    print(f"  {kind:<7} {workers:>7} {pipeline:>8.0f} i/s {end_to_end:>8.0f} i/s {pipeline / model:>14.2f}x")
            print()
    finally:
        parent.send("stop")
        proxy.join(timeout=5)
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
