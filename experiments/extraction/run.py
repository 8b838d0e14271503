"""Extraction throughput, padding per batch, and FLOPs per image of the real Qwen3-VL sizes.

    python experiments/extraction/run.py [--threads N] [--images N]

1. images/s of feature extraction (no cache) with the random test models on CPU, fp32;
2. the share of padding tokens per batch, in file order and as extraction batches them (sorted by
   sequence length), for images of mixed sizes with captions beside them (text=caption);
3. forward FLOPs per image of Qwen3-VL-2B/4B/8B at 448^2 and 768^2 from their configs, and the
   images/s each would need on one GPU for a given model-FLOPs utilisation.
"""

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from charfeat.config import BackboneConfig, build  # noqa: E402
from charfeat.models.backbone.tiny import build_tiny_qwen3_vl  # noqa: E402
from charfeat.models.backbone.flops import QWEN3_VL_SIZES, forward_flops, qwen3_vl_config  # noqa: E402
from charfeat.data.records import Record  # noqa: E402
from charfeat.features.extract import ExtractionStats, FeatureExtractor  # noqa: E402

CPU = torch.device("cpu")
MODELS = {
    "tiny": ({}, 128 * 128),
    "small": ({"hidden_size": 512, "num_layers": 4, "num_heads": 8, "num_kv_heads": 4, "vision_hidden_size": 256,
               "vision_depth": 4}, 224 * 224),
}


class InMemory:
    def __init__(self, images):
        self.images = images

    def load_images(self, split, records):
        return [self.images[r.filename] for r in records]


def mixed_set(n: int, max_side: int, seed: int = 0):
    rng = random.Random(seed)
    images, records = {}, []
    for i in range(n):
        w, h = rng.randrange(64, max_side + 1, 32), rng.randrange(64, max_side + 1, 32)
        images[f"{i}.jpg"] = Image.fromarray(np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8))
        caption = "A person wearing " + ", ".join(rng.sample(["a hat", "jeans", "a red dress", "sneakers", "a suit",
                                                              "glasses", "a hoodie", "boots"], k=rng.randint(1, 6)))
        records.append(Record(str(i), f"{i}.jpg", "x", {"caption": caption}))
    return InMemory(images), records


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="charfeat-extract-"))

    print(f"1. extraction throughput (CPU, fp32, {args.threads} thread(s), {args.images} images, no cache)")
    for name, (kwargs, max_pixels) in MODELS.items():
        path = build_tiny_qwen3_vl(workdir / name, **kwargs)
        side = int(max_pixels ** 0.5)
        data, records = mixed_set(args.images, side)
        for text in ("none", "caption"):
            backbone = build(BackboneConfig, name_or_path=str(path), text=text, max_pixels=max_pixels,
                             dtype="float32", feature_cache=None)
            params = sum(p.numel() for p in backbone.parameters()) / 1e6
            FeatureExtractor(backbone, 8, CPU).extract(data, "train", records[:8])  # warm-up
            for batch_size in (8, 32):
                stats = ExtractionStats()
                start = time.perf_counter()
                FeatureExtractor(backbone, batch_size, CPU).extract(data, "train", records, stats=stats)
                seconds = time.perf_counter() - start
                file_order = ExtractionStats()
                for chunk in (records[i:i + batch_size] for i in range(0, len(records), batch_size)):
                    inputs = backbone.preprocess(data.load_images("train", chunk),
                                                 [r.metadata["caption"] if text != "none" else None for r in chunk])
                    mask = inputs["attention_mask"]
                    file_order.tokens += mask.numel()
                    file_order.padding_tokens += int((mask == 0).sum())
                print(f"   {name:<5} {params:5.1f} M params  text={text:<7} batch {batch_size:>2}: "
                      f"{args.images / seconds:6.1f} images/s; padding share {stats.padding_share:5.1%} sorted "
                      f"(worst batch {max(stats.batch_padding):5.1%}) vs {file_order.padding_share:5.1%} in file order")

    print("\n2. forward FLOPs per image (vision tower + mergers + language model, no LM head; "
          "24 prompt tokens)")
    print(f"   {'model':<6} {'pixels':>7} {'LLM tokens':>10} {'vision':>9} {'language':>9} {'total':>9}   "
          f"images/s at 40% MFU on H100 (989 TFLOP/s bf16 dense) / A10G (125)")
    for size in QWEN3_VL_SIZES:
        config = qwen3_vl_config(size)
        for pixels in (448, 768):
            f = forward_flops(config, pixels, pixels)
            print(f"   {size:<6} {pixels:>4}^2 {f['llm_tokens']:>10} {f['vision'] / 1e12:>8.2f}T "
                  f"{f['language'] / 1e12:>8.2f}T {f['total'] / 1e12:>8.2f}T   "
                  f"{0.4 * 989e12 / f['total']:8.0f} / {0.4 * 125e12 / f['total']:5.0f}")


if __name__ == "__main__":
    main()
