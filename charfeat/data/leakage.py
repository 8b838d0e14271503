"""Leakage between the splits, checked before training starts: a group, or a picture, in both.

- Groups (``data.group_field``): every record names its group (the source picture of augmented
  copies, or the person); a group with records in train and in val is a leak.
- Near-duplicates: the same picture re-encoded, resized or mirrored, under another file name. Each
  image is reduced to a fingerprint, its 16×16 colour thumbnail (area-averaged, mean removed, unit
  length), and a val image whose fingerprint (or its mirror image's) has a cosine above
  ``data.duplicate_threshold`` with a train image's is reported as a pair. Thumbnails do not depend
  on the backbone, its pooling or its prompt, so one threshold holds for every model; on the sample
  set, different pictures reach at most 0.957 and JPEG re-encodes (quality 30 and up), resized (×0.4
  to ×3) and mirrored copies at least 0.972 (`experiments/` has no study of real photos: check the
  reported cosines on yours).

Fingerprints are cheap to keep and dear to make (a full read of every image, before training), so
they go to ``data.fingerprint_cache`` by image identity (`DataSource.identity`: a file's path,
size and times, an S3 object's ETag): a later run, or another job of a sweep, reads only the
images it has not fingerprinted yet. JPEGs are decoded scaled down in the decoder (at least
`DRAFT_SIDE` px a side: a phone photo in about a tenth of the time; small images in full), on
every core.

Under ``data.on_leak=error`` a leak stops the run with every group or pair named; under ``warn``
it is logged and the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageOps

from charfeat.console import progress
from charfeat.config import OnLeak
from charfeat.data.loader import core_share
from charfeat.data.records import Record
from charfeat.errors import ConfigError, UserError
from charfeat.features.cache import FeatureCache, alias_key

log = logging.getLogger(__name__)

SIDE = 16  # fingerprint: SIDE × SIDE × 3 values
DRAFT_SIDE = 4 * SIDE  # a JPEG is decoded at no less than this (a reduction by 2, 4 or 8 when it is bigger)
CHUNK = 16  # images a thread fetches and decodes at once
MAX_THREADS = 8
LOOKUP_ROWS = 4096  # cached fingerprints read at once
BLOCK_BYTES = 256 * 2**20  # val × train products held at once by the search
FINGERPRINT_CODE = 1  # bump when `fingerprint` or the decoding changes: the cache is keyed by it
SHOWN = 20  # groups or pairs named in a message


class LeakError(UserError, ValueError):
    """A group or a picture in both splits, under ``data.on_leak=error``; names every one."""


def fingerprint(image: Image.Image) -> np.ndarray:
    """An image's 16×16 colour thumbnail as a unit vector with its mean removed [768], float32."""
    pixels = np.asarray(image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BOX), dtype=np.float64)
    vector = pixels.reshape(-1) - pixels.mean()
    norm = np.linalg.norm(vector)
    return (vector / norm if norm > 0 else vector).astype(np.float32)


def fingerprint_pair(image: Image.Image) -> np.ndarray:
    """The image's fingerprint and its mirror image's, one row [2 × 768]."""
    return np.concatenate([fingerprint(image), fingerprint(ImageOps.mirror(image))])


def open_fingerprint_cache(root: str | None):
    """The on-disk store of fingerprint pairs under ``root`` (a `FeatureCache` keyed by image identity), or None."""
    if root is None:
        return None
    return FeatureCache(root, {"fingerprint": f"{SIDE}x{SIDE} colour thumbnail and its mirror image",
                               "code": FINGERPRINT_CODE, "draft_side": DRAFT_SIDE}, dim=2 * SIDE * SIDE * 3)


def fingerprints(data, split: str, records: list[Record], cache: FeatureCache | None = None, mirrored: bool = True,
                 identities: list[str | None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """[N, 768] fingerprints of the split's images, and [N, 768] of their mirror images (None
    unless ``mirrored``). Those in ``cache`` (found by the image's identity; ``identities``: the
    records', if the caller has them) are not read; the others are read on every core and added
    to it. Memory: the result, and a chunk at a time."""
    width = SIDE * SIDE * 3
    out = np.empty((len(records), 2 * width if mirrored else width), dtype=np.float32)
    if cache is None:
        identities = [None] * len(records)
    elif identities is None:
        identities = [data.identity(split, r.filename) for r in records]
    keys = [None if identity is None else alias_key(identity, None) for identity in identities]
    found = np.zeros(len(records), dtype=bool)
    known = [i for i, key in enumerate(keys) if key is not None]
    for start in range(0, len(known), LOOKUP_ROWS):
        batch = known[start:start + LOOKUP_ROWS]
        for i, row in zip(batch, cache.get([keys[i] for i in batch])):
            if row is not None:
                out[i], found[i] = row[:out.shape[1]].numpy(), True
    todo = np.flatnonzero(~found).tolist()

    def compute(chunk: list[int]) -> np.ndarray:
        images = data.load_images(split, [records[i] for i in chunk], at_least=DRAFT_SIDE)
        return np.stack([fingerprint_pair(image) for image in images])

    chunks = [todo[start:start + CHUNK] for start in range(0, len(todo), CHUNK)]
    bar = progress(total=len(todo), desc=f"fingerprint {split}", unit="image", leave=False)
    with ThreadPoolExecutor(min(core_share(), MAX_THREADS)) as pool, bar:
        for chunk, rows in zip(chunks, pool.map(compute, chunks)):  # PIL decodes and resizes without the GIL
            out[chunk] = rows[:, :out.shape[1]]
            cached = [n for n, i in enumerate(chunk) if keys[i] is not None]
            if cached:
                cache.put([keys[chunk[n]] for n in cached], torch.from_numpy(rows[cached]))
            bar.update(len(chunk))
    if cache is not None:
        cache.flush()
    return out[:, :width], out[:, width:] if mirrored else None


def shared_groups(train: list[Record], val: list[Record]) -> dict[str, tuple[int, int]]:
    """{group: (train records, val records)} for each group in both splits."""
    in_train, in_val = Counter(r.group for r in train), Counter(r.group for r in val)
    return {group: (in_train[group], in_val[group]) for group in sorted(set(in_train) & set(in_val))}


def near_duplicates(val: np.ndarray, val_mirrored: np.ndarray, train: np.ndarray, threshold: float,
                    device: torch.device = torch.device("cpu"),
                    block_bytes: int = BLOCK_BYTES) -> list[tuple[int, int, float]]:
    """(val index, train index, cosine) of every pair above ``threshold``, highest first; the
    mirrored val fingerprints count too. Exact, on ``device`` (the run's accelerator: val × train
    products are the check's quadratic part), in blocks of val rows of at most ``block_bytes`` of
    products, never a full val × train matrix."""
    pairs = []
    train_t = torch.from_numpy(train).to(device)
    rows = max(1, block_bytes // (8 * max(1, len(train))))  # two float32 products per pair
    for start in range(0, len(val), rows):
        plain = torch.from_numpy(val[start:start + rows]).to(device)
        mirrored = torch.from_numpy(val_mirrored[start:start + rows]).to(device)
        sims = torch.maximum(plain @ train_t.T, mirrored @ train_t.T)
        found = (sims > threshold).nonzero()
        values = sims[found[:, 0], found[:, 1]].cpu().tolist()
        pairs += [(start + i, j, value) for (i, j), value in zip(found.cpu().tolist(), values)]
    return sorted(pairs, key=lambda p: -p[2])


# The pairs found for the same images (each split's image identities, in order) and threshold, in
# this process: the jobs of a sweep run in one process read and fingerprint every image once.
_PAIRS: dict[str, list[tuple[int, int, float]]] = {}


def _duplicate_pairs(data, train: list[Record], val: list[Record], threshold: float, cache_dir: str | None,
                     device: torch.device) -> list[tuple[int, int, float]]:
    identities = [data.identity(split, r.filename) for split, records in (("val", val), ("train", train))
                  for r in records]
    key = None
    if None not in identities:
        key = hashlib.sha256(json.dumps([len(val), threshold, identities]).encode()).hexdigest()
        if key in _PAIRS:
            return _PAIRS[key]
    cache = open_fingerprint_cache(cache_dir)
    train_prints, _ = fingerprints(data, "train", train, cache, mirrored=False, identities=identities[len(val):])
    pairs = near_duplicates(*fingerprints(data, "val", val, cache, identities=identities[:len(val)]), train_prints,
                            threshold, device)
    if key is not None:
        _PAIRS[key] = pairs
    return pairs


@dataclass
class LeakReport:
    """What `check_leakage` found: groups in both splits and near-duplicate pairs (val, train, cosine)."""

    groups: dict[str, tuple[int, int]] = field(default_factory=dict)
    duplicates: list[tuple[str, str, float]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.groups or self.duplicates)

    def describe(self) -> str:
        lines = []
        if self.groups:
            lines.append(f"{len(self.groups)} group(s) have records in both train and val (group: train, val):")
            lines += [f"  {group}: {n_train}, {n_val}" for group, (n_train, n_val) in list(self.groups.items())[:SHOWN]]
        if self.duplicates:
            lines.append(f"{len(self.duplicates)} val image(s) nearly duplicate a train image (val ~ train, cosine):")
            lines += [f"  {v} ~ {t}, {cos:.4f}" for v, t, cos in self.duplicates[:SHOWN]]
        if len(self.groups) > SHOWN or len(self.duplicates) > SHOWN:
            lines.append(f"  (the first {SHOWN} of each are shown)")
        return "\n".join(lines)


def check_leakage(data, records: dict[str, list[Record]], group_field: str | None, on_leak: OnLeak,
                  duplicate_threshold: float | None, fingerprint_cache: str | None = None,
                  device: torch.device = torch.device("cpu")) -> LeakReport:
    """Groups and near-duplicates across ``records["train"]`` and ``records["val"]`` (images read
    through ``data``, fingerprints kept in ``fingerprint_cache``, compared on ``device``); raises
    LeakError under ``error``, logs a warning under ``warn``."""
    if duplicate_threshold is not None and not -1.0 <= duplicate_threshold <= 1.0:
        raise ConfigError(f"data.duplicate_threshold must be a cosine in [-1, 1] or null, got {duplicate_threshold}")
    train, val = records["train"], records["val"]
    report = LeakReport(groups=shared_groups(train, val) if group_field else {})
    if duplicate_threshold is not None:
        pairs = _duplicate_pairs(data, train, val, duplicate_threshold, fingerprint_cache, device)
        report.duplicates = [(data.location("val", val[i].filename), data.location("train", train[j].filename), c)
                             for i, j, c in pairs]
    if report:
        message = f"data: leakage between train and val\n{report.describe()}"
        if on_leak == OnLeak.error:
            raise LeakError(message + f"\n(data.on_leak={on_leak}; set data.on_leak=warn to train anyway"
                                      + (", data.duplicate_threshold to tune or null to skip the image check"
                                         if report.duplicates else "") + ")")
        log.warning("%s", message)
    return report
