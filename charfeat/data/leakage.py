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

Under ``data.on_leak=error`` a leak stops the run with every group or pair named; under ``warn``
it is logged and the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

from charfeat.console import progress
from charfeat.config import OnLeak
from charfeat.data.records import Record
from charfeat.errors import ConfigError, UserError

log = logging.getLogger(__name__)

SIDE = 16  # fingerprint: SIDE × SIDE × 3 values
CHUNK = 64  # images decoded at once
SHOWN = 20  # groups or pairs named in a message


class LeakError(UserError, ValueError):
    """A group or a picture in both splits, under ``data.on_leak=error``; names every one."""


def fingerprint(image: Image.Image) -> np.ndarray:
    """An image's 16×16 colour thumbnail as a unit vector with its mean removed [768], float32."""
    pixels = np.asarray(image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BOX), dtype=np.float64)
    vector = pixels.reshape(-1) - pixels.mean()
    norm = np.linalg.norm(vector)
    return (vector / norm if norm > 0 else vector).astype(np.float32)


def fingerprints(data, split: str, records: list[Record]) -> tuple[np.ndarray, np.ndarray]:
    """[N, 768] fingerprints of the split's images, and [N, 768] of their mirror images."""
    plain, mirrored = [], []
    for start in progress(range(0, len(records), CHUNK), desc=f"fingerprint {split}", unit="chunk", leave=False):
        for image in data.load_images(split, records[start:start + CHUNK]):
            plain.append(fingerprint(image))
            mirrored.append(fingerprint(ImageOps.mirror(image)))
    return np.stack(plain), np.stack(mirrored)


def shared_groups(train: list[Record], val: list[Record]) -> dict[str, tuple[int, int]]:
    """{group: (train records, val records)} for each group in both splits."""
    in_train, in_val = Counter(r.group for r in train), Counter(r.group for r in val)
    return {group: (in_train[group], in_val[group]) for group in sorted(set(in_train) & set(in_val))}


def near_duplicates(val: np.ndarray, val_mirrored: np.ndarray, train: np.ndarray,
                    threshold: float, block: int = 1024) -> list[tuple[int, int, float]]:
    """(val index, train index, cosine) of every pair above ``threshold``, highest first; the
    mirrored val fingerprints count too. Blocks of val rows, never a full val × train matrix."""
    pairs = []
    for start in range(0, len(val), block):
        sims = np.maximum(val[start:start + block] @ train.T, val_mirrored[start:start + block] @ train.T)
        for i, j in zip(*np.nonzero(sims > threshold)):
            pairs.append((start + int(i), int(j), float(sims[i, j])))
    return sorted(pairs, key=lambda p: -p[2])


# The pairs found for the same images (each split's image identities, in order) and threshold, in
# this process: the jobs of a sweep run in one process read and fingerprint every image once.
_PAIRS: dict[str, list[tuple[int, int, float]]] = {}


def _duplicate_pairs(data, train: list[Record], val: list[Record], threshold: float) -> list[tuple[int, int, float]]:
    identities = [data.identity(split, r.filename) for split, records in (("val", val), ("train", train))
                  for r in records]
    key = None
    if None not in identities:
        key = hashlib.sha256(json.dumps([len(val), threshold, identities]).encode()).hexdigest()
        if key in _PAIRS:
            return _PAIRS[key]
    pairs = near_duplicates(*fingerprints(data, "val", val), fingerprints(data, "train", train)[0], threshold)
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
                  duplicate_threshold: float | None) -> LeakReport:
    """Groups and near-duplicates across ``records["train"]`` and ``records["val"]`` (images read
    through ``data``); raises LeakError under ``error``, logs a warning under ``warn``."""
    if duplicate_threshold is not None and not -1.0 <= duplicate_threshold <= 1.0:
        raise ConfigError(f"data.duplicate_threshold must be a cosine in [-1, 1] or null, got {duplicate_threshold}")
    train, val = records["train"], records["val"]
    report = LeakReport(groups=shared_groups(train, val) if group_field else {})
    if duplicate_threshold is not None:
        pairs = _duplicate_pairs(data, train, val, duplicate_threshold)
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
