"""Peak RSS of embedding a folder of phone-sized photos with a warm feature cache full of other items.

    .venv/bin/python experiments/embed_memory/bench.py --images 2000 --cached 100000 --batch 32

Generates the photos (4000x3000 JPEGs, distinct) once under --work, builds the tiny Qwen3-VL,
fills the frozen-feature cache with --cached items of other images (as if every dataset ever
embedded with that model were in it), then, in a fresh process, embeds the photos through
`FeatureExtractor.extract` (all computed: none of them is in the cache) and reports that
process's resident memory before extraction and at its peak (VmRSS, VmHWM from /proc).
Uses only APIs that the base commit has too, so the same script measures it (PYTHONPATH=<checkout>).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def memory() -> dict[str, float]:
    """This process's resident and peak resident memory, GiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[key].split()[0]) / 2**20 for name, key in (("rss", "VmRSS"), ("peak", "VmHWM"))}


def make_photos(folder: Path, count: int, width: int, height: int) -> None:
    """Distinct smooth photos (a gradient and a seeded block each): ~0.3 MB as JPEG, 36 MB decoded."""
    import numpy as np
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 // width, ys * 255 // height, (xs + ys) * 255 // (width + height)], -1).astype(np.uint8)
    rows = []
    for i in range(count):
        path = folder / "images" / f"photo_{i:05d}.jpg"
        if not path.exists():
            pixels = base.copy()
            top, left = (i * 97) % (height - 400), (i * 131) % (width - 400)
            pixels[top:top + 400, left:left + 400] = ((i * 37) % 256, (i * 59) % 256, (i * 83) % 256)
            Image.fromarray(pixels).save(path, quality=85)
        rows.append({"id": f"photo_{i:05d}", "image_filename": path.name,
                     "image_metadata": {"fashion_style": ("Casual_Basic", "Street_Hip")[i % 2]}})
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))


def backbone(work: Path):
    from charfeat.config import BackboneConfig, build
    from charfeat.models.backbone.tiny import build_tiny_qwen3_vl

    path = build_tiny_qwen3_vl(work / "tiny")
    return build(BackboneConfig, name_or_path=str(path), dtype="float32", max_pixels=None,
                 feature_cache=str(work / "features"))


def fill_cache(work: Path, count: int) -> None:
    """``count`` items of other images in the feature cache, in shards of 1,024 as runs write them."""
    import torch

    from charfeat.features.cache import FeatureCache

    model = backbone(work)
    cache = FeatureCache(work / "features", model.feature_fingerprint(), dim=model.hidden_size)
    generator = torch.Generator().manual_seed(0)
    for start in range(0, count, 1024):
        n = min(1024, count - start)
        keys = [int(start + i).to_bytes(32, "big") for i in range(n)]
        cache.put(keys, torch.randn(n, model.hidden_size, generator=generator))
        cache.flush()


def embed(work: Path, batch: int) -> dict:
    import torch

    from charfeat.config import LocalDataConfig, build
    from charfeat.features.extract import ExtractionStats, FeatureExtractor

    torch.set_num_threads(2)
    model = backbone(work)
    data = build(LocalDataConfig, root=str(work / "photos"))
    records = data.records("train")
    extractor = FeatureExtractor(model, batch, torch.device("cpu"))
    before = memory()
    started = time.perf_counter()
    stats = ExtractionStats()
    features = extractor.extract(data, "train", records, stats=stats)
    after = memory()
    import charfeat

    return {"code": str(Path(charfeat.__file__).parent), "images": len(records), "computed": stats.computed, "dim": int(features.shape[1]),
            "rss_before_gib": before["rss"], "peak_before_gib": before["peak"], "peak_gib": after["peak"],
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--cached", type=int, default=100_000, help="items of other images in the feature cache")
    parser.add_argument("--batch", type=int, default=32, help="trainer.embed_batch_size")
    parser.add_argument("--work", type=Path, default=Path("/tmp/charfeat-embed-memory"))
    parser.add_argument("--child", choices=["fill", "embed"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "fill":
        return fill_cache(args.work, args.cached)
    if args.child == "embed":
        return print(json.dumps(embed(args.work, args.batch)))

    make_photos(args.work / "photos", args.images, args.width, args.height)
    common = [sys.executable, __file__, "--work", str(args.work), "--cached", str(args.cached)]
    shutil.rmtree(args.work / "features", ignore_errors=True)  # no photo features from an earlier run
    subprocess.run([*common, "--child", "fill"], check=True)
    out = subprocess.run([*common, "--batch", str(args.batch), "--child", "embed"], check=True, capture_output=True,
                         text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    result = json.loads(out.stdout.splitlines()[-1])
    decoded = args.width * args.height * 3 / 2**30
    grown = result["peak_gib"] - result["rss_before_gib"]
    print(f"{result['images']} photos of {args.width}x{args.height} ({decoded * 1024:.0f} MiB each decoded), "
          f"{args.cached:,} other items of dim {result['dim']} in the feature cache, batch {args.batch}; "
          f"{result['computed']} computed in {result['seconds']:.0f} s; code: {result['code']}")
    print(f"  RSS before extraction     {result['rss_before_gib']:.2f} GiB (model, imports; peak so far "
          f"{result['peak_before_gib']:.2f})")
    print(f"  peak RSS                  {result['peak_gib']:.2f} GiB   (goal: under 2 GiB)")
    print(f"  growth during extraction  {grown:.2f} GiB = {grown / decoded:.1f} decoded photos; "
          f"all {result['images']} decoded would be {decoded * result['images']:.0f} GiB")


if __name__ == "__main__":
    main()
