"""What the leak check's near-duplicate search costs at photo size and at scale.

    .venv/bin/python experiments/leakage_scale/bench.py --images 120 --size 2400x1800

Part 1, fingerprinting (the check reads every train and val image before training): N phone-size
JPEGs (a sample figure scaled up, with pixel noise so the JPEG is photo-sized), each
fingerprinted three ways in one process:
- as before: every image fully decoded, on one core;
- a first run now: JPEGs decoded scaled down (at least 64 px a side), on every core, the
  fingerprints written to a fresh `data.fingerprint_cache`;
- a later run now: the same cache, opened anew as a new process would (keys read from disk),
  each image found by its identity, none read.
Part 2, the search (val × train dot products over 768-value fingerprints, exact, in blocks):
random unit vectors at three sizes, and the growth exponent.
"""

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def photo(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    from charfeat.data.sources.sample import STYLES, draw_figure

    base = np.asarray(draw_figure(rng.choice(list(STYLES)), 96, rng).resize(size, Image.Resampling.BICUBIC),
                      dtype=np.int16)
    noise = np.random.default_rng(rng.randrange(1 << 30)).integers(-12, 13, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--size", default="2400x1800")
    parser.add_argument("--search", default="1000x9000,2000x18000,4000x36000", help="val x train sizes")
    args = parser.parse_args()

    from charfeat.config import LocalDataConfig, build
    from charfeat.data.images import decode
    from charfeat.data.leakage import fingerprint_pair, fingerprints, near_duplicates, open_fingerprint_cache
    from charfeat.data.loader import core_share

    work = Path(tempfile.mkdtemp(prefix="charfeat-leakage-"))
    (work / "images").mkdir()
    size = tuple(int(v) for v in args.size.split("x"))
    rng = random.Random(0)
    rows = []
    for i in range(args.images):
        photo(rng, size).save(work / "images" / f"p{i}.jpg", quality=90)
        rows.append({"id": f"p{i}", "image_filename": f"p{i}.jpg", "image_metadata": {"fashion_style": "Casual_Basic"}})
    (work / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = build(LocalDataConfig, root=str(work), val_jsonl=None, duplicate_threshold=None)
    records = data.records("train") + data.records("val")  # one image folder: fingerprinted as one split
    megabytes = sum((work / "images" / r.filename).stat().st_size for r in records) / 1e6
    print(f"{len(records)} JPEGs of {args.size} ({megabytes / len(records):.1f} MB each); {core_share()} cores")

    started = time.perf_counter()
    before = np.stack([fingerprint_pair(decode((work / "images" / r.filename).read_bytes())) for r in records])
    times = {"before: full decode, one core": time.perf_counter() - started}
    started = time.perf_counter()
    first, _ = fingerprints(data, "train", records, open_fingerprint_cache(str(work / "fingerprints")))
    times["now, first run: scaled-down decode, every core, cached"] = time.perf_counter() - started
    started = time.perf_counter()
    later, _ = fingerprints(data, "train", records, open_fingerprint_cache(str(work / "fingerprints")))
    times["now, a later run: found by identity"] = time.perf_counter() - started
    assert np.array_equal(first, later)
    print(f"\n{'fingerprinting':<58}{'seconds':>9}{'ms/image':>10}{'vs before':>10}")
    for name, seconds in times.items():
        print(f"{name:<58}{seconds:>9.2f}{1000 * seconds / len(records):>10.2f}"
              f"{seconds / times['before: full decode, one core']:>10.3f}")
    cosine = np.sum(first * before[:, :768], axis=1)
    print(f"cosine of each image's fingerprint, scaled-down decode vs full: min {cosine.min():.4f}, "
          f"median {np.median(cosine):.4f}")

    print(f"\n{'search (val x train)':<24}{'seconds':>9}{'ns per pair':>13}")
    sizes, seconds = [], []
    generator = np.random.default_rng(0)
    for shape in args.search.split(","):
        n_val, n_train = (int(v) for v in shape.split("x"))
        val, train = (generator.standard_normal((n, 768)).astype(np.float32) for n in (n_val, n_train))
        val /= np.linalg.norm(val, axis=1, keepdims=True)
        train /= np.linalg.norm(train, axis=1, keepdims=True)
        started = time.perf_counter()
        near_duplicates(val, val[:, ::-1].copy(), train, 0.97)
        seconds.append(time.perf_counter() - started)
        sizes.append(n_val * n_train)
        print(f"{shape:<24}{seconds[-1]:>9.2f}{1e9 * seconds[-1] / sizes[-1]:>13.2f}")
    exponent = math.log(seconds[-1] / seconds[0]) / math.log(sizes[-1] / sizes[0])
    print(f"growth exponent in val x train pairs: {exponent:.2f}; 100k x 900k pairs would take about "
          f"{seconds[-1] / sizes[-1] * 1e5 * 9e5 / 60:.0f} min here")
    print(f"outputs in {work}")


if __name__ == "__main__":
    main()
