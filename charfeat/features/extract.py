"""Backbone passes over records: images (+ record text) -> pooled features, in batches.

`FeatureExtractor` owns the feature cache of a frozen backbone: it reads every feature it can from
disk and computes only the rest, so later epochs, runs and sweep jobs never rerun the backbone.
Images are hashed after decoding, so the cache follows content, not filenames. Features missing
from the cache are sorted by sequence length before batching, which keeps padding low; this cannot
change a feature, because pooling ignores padding (batch invariance, tested).

Records whose image the source identifies without reading it (a local file's path, size and times;
an S3 ETag) are looked up by that alias first (`FeatureCache.resolve`): a feature found so costs no
fetch, no decode and no hash, and the backbone's weights are read only when some feature is missing.

charfeat has no image augmentation: a frozen backbone sees each image exactly as stored, which is
what makes one cached feature per image valid. Augmentation would need per-view keys or no cache.

The cache holds the backbone's pooled features (`Qwen3VLBackbone.pool`); every feature leaves
here through `Qwen3VLBackbone.finish` (a Matryoshka cut to ``backbone.embed_dim``, L2
normalisation), so one extraction serves every ``embed_dim``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import torch

from charfeat.console import progress
from charfeat.data.records import Record, record_text
from charfeat.data.sources.base import DataSource
from charfeat.features.cache import FeatureCache, alias_key, item_key
from charfeat.models.backbone.model import Qwen3VLBackbone

log = logging.getLogger(__name__)


# Decoded pixels held by one extraction window (the window used to be 8 batches: ~9 GB of 12 MP
# photos at batch 32). Small images still fill 8 batches (1,700 of 224 px), so sorting by length
# keeps working; large ones are resized to the same pixel budget anyway, so their order hardly
# matters. The processor holds about two more copies of a batch's pixels while it resizes.
WINDOW_BYTES = 256 * 1024 * 1024


def batched(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass
class ExtractionStats:
    """What one `FeatureExtractor.extract` call did: cache hits, backbone batches, padding share."""

    images: int = 0
    cache_hits: int = 0
    unread: int = 0  # cache hits found by the source's identity of the image, without reading it
    computed: int = 0
    batches: int = 0
    tokens: int = 0
    padding_tokens: int = 0
    batch_padding: list[float] = field(default_factory=list)

    @property
    def padding_share(self) -> float:
        return self.padding_tokens / self.tokens if self.tokens else 0.0


class FeatureExtractor:
    """Runs ``backbone`` over records in batches of ``batch_size`` on ``device``.

    A frozen backbone with a ``feature_cache_dir`` gets an on-disk `FeatureCache` keyed by its
    `feature_fingerprint`; a trainable one never does (its features change as it trains).
    """

    def __init__(self, backbone: Qwen3VLBackbone, batch_size: int, device: torch.device):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backbone, self.batch_size, self.device = backbone, batch_size, device
        self.cache = None
        if backbone.frozen and backbone.feature_cache_dir is not None:  # pooled features, before `finish`
            self.cache = FeatureCache(backbone.feature_cache_dir, backbone.feature_fingerprint(),
                                      dim=backbone.hidden_size)

    def texts(self, records: list[Record]) -> list[str | None]:
        return [record_text(r, self.backbone.text) for r in records]

    def forward(self, images: list, texts: list[str | None], stats: ExtractionStats | None = None) -> torch.Tensor:
        """Images and their texts -> pooled backbone features [B, hidden_size] on the device (what the cache holds)."""
        inputs = self.backbone.preprocess(images, texts)
        if stats is not None:
            mask = inputs["attention_mask"]
            stats.batches += 1
            stats.tokens += mask.numel()
            stats.padding_tokens += int((mask == 0).sum())
            stats.batch_padding.append(float((mask == 0).sum()) / mask.numel())
        return self.backbone.pool(**{name: value.to(self.device) for name, value in inputs.items()})

    def encode(self, data: DataSource, split: str, records: list[Record]) -> torch.Tensor:
        """One batch of records -> backbone features [B, feature_dim] on the device (gradients as the
        backbone allows)."""
        return self.backbone.finish(self.forward(data.load_images(split, records), self.texts(records)))

    @torch.no_grad()
    def extract(self, data: DataSource, split: str, records: list[Record],
                then: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
                stats: ExtractionStats | None = None) -> torch.Tensor:
        """Features [N, feature_dim] (or ``then(features)``) of every record, in order, gathered on the CPU.

        Records are read in windows (`windows`) of at most 8 batches and `WINDOW_BYTES` of decoded
        pixels; within a window, the images not in the feature cache are sorted by sequence length
        and run in batches of at most ``batch_size``.
        """
        if not records:
            raise ValueError(f"no records to embed in split {split!r}")
        stats = stats if stats is not None else ExtractionStats()
        out: list[torch.Tensor | None] = [None] * len(records)
        aliases = self._found_by_alias(data, split, records, out, stats)
        todo = [i for i, feature in enumerate(out) if feature is None]
        with progress(total=len(records), initial=len(records) - len(todo), desc=f"embed {split}", unit="image",
                      leave=False) as bar:
            for start, images in windows(data, split, [records[i] for i in todo], 8 * self.batch_size, WINDOW_BYTES):
                where = todo[start:start + len(images)]
                self._extract_window([records[i] for i in where], images, out, where, [aliases[i] for i in where],
                                     stats)
                bar.update(len(images))
                del images
        if self.cache is not None:
            self.cache.flush()
            log.info("features %s: %d images, %d from the cache (%s; %d without reading the image), %d computed",
                     split, stats.images, stats.cache_hits, self.cache.dir, stats.unread, stats.computed)
        result = None
        for start in range(0, len(out), self.batch_size):  # rows are freed as the result fills: one copy at a time
            chunk = torch.stack(out[start:start + self.batch_size]).to(self.device)
            out[start:start + self.batch_size] = [None] * len(chunk)
            done = then(self.backbone.finish(chunk)).float().cpu()
            if result is None:
                result = torch.empty(len(out), *done.shape[1:])
            result[start:start + len(done)] = done
        return result

    def _found_by_alias(self, data: DataSource, split: str, records: list[Record], out: list,
                        stats: ExtractionStats) -> list[bytes | None]:
        """Fill ``out`` with the features the cache finds by each record's alias (its image unread);
        returns every record's alias (None where the source cannot identify the image)."""
        if self.cache is None:
            return [None] * len(records)
        aliases = [None if (identity := data.identity(split, r.filename)) is None else alias_key(identity, text)
                   for r, text in zip(records, self.texts(records))]
        keys = self.cache.resolve(aliases)
        known = [i for i, key in enumerate(keys) if key is not None]
        for i, feature in zip(known, self.cache.get([keys[i] for i in known])):
            out[i] = feature
        found = sum(out[i] is not None for i in known)
        stats.images += found
        stats.cache_hits += found
        stats.unread += found
        return aliases

    def _extract_window(self, records: list[Record], images: list, out: list, where: list[int],
                        aliases: list[bytes | None], stats: ExtractionStats) -> None:
        """Fill ``out`` at ``where`` (the records' places): from the cache where it can, else from the backbone."""
        cache, texts = self.cache, self.texts(records)
        keys, todo = None, list(range(len(records)))
        if cache is not None:
            keys = [item_key(image, text) for image, text in zip(images, texts)]
            cache.add_aliases(aliases, keys)
            todo = []
            for i, cached in enumerate(cache.get(keys)):
                if cached is None:
                    todo.append(i)
                else:
                    out[where[i]] = cached
        stats.images += len(records)
        stats.cache_hits += len(records) - len(todo)
        stats.computed += len(todo)
        todo.sort(key=lambda i: self.backbone.sequence_length(images[i], texts[i]))
        for batch in batched(todo, self.batch_size):
            features = self.forward([images[i] for i in batch], [texts[i] for i in batch], stats).float().cpu()
            if cache is not None:
                cache.put([keys[i] for i in batch], features)
            for i, row in zip(batch, features):
                out[where[i]] = row


def windows(data: DataSource, split: str, records: list[Record], max_images: int,
            max_bytes: int = WINDOW_BYTES):
    """(offset, decoded images) of consecutive records: at most ``max_images`` of them and, past the
    first image, at most ``max_bytes`` of decoded pixels. Images are loaded in groups sized by the
    largest seen so far, so phone photos (36 MB decoded at 12 MP) never pile up by the hundred."""
    start, largest = 0, 0
    while start < len(records):
        images: list = []
        size = 0
        while start + len(images) < len(records) and len(images) < max_images:
            room = max_bytes - size
            group = 1 if not largest else max(0, min(max_images - len(images), room // largest))
            if group == 0 and images:
                break
            loaded = data.load_images(split, records[start + len(images):start + len(images) + max(group, 1)])
            sizes = [image.width * image.height * len(image.getbands()) for image in loaded]
            largest, size = max(largest, *sizes), size + sum(sizes)
            images += loaded
        yield start, images
        start += len(images)
