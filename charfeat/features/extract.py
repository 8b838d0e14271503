"""Backbone passes over records: images (+ record text) -> pooled features, in batches.

`FeatureExtractor` owns the feature cache of a frozen backbone: it reads every feature it can from
disk and computes only the rest, so later epochs, runs and sweep jobs never rerun the backbone.
Images are hashed after decoding, so the cache follows content, not filenames.

Records whose image the source identifies without reading it (a local file's path, size and times;
an S3 ETag) are looked up by that alias first (`FeatureCache.resolve`): a feature found so costs no
fetch, no decode and no hash, and the backbone's weights are read only when some feature is missing.
The rest go through the input pipeline (`charfeat.data.loader`): worker processes fetch, decode,
hash and encode them, sorted by sequence length within a window (pooling ignores padding, so this
cannot change a feature: batch invariance, tested) and batched by ``trainer.embed_batch_size`` and
``backbone.max_tokens_per_batch``; a batch that runs out of GPU memory is run again as two halves.

An augmented view (``augment`` with a frozen backbone) is cached under its own key: the image's,
the augmentation's settings and the view's index (`view_key`). The cache holds the backbone's
pooled features (`Qwen3VLBackbone.pool`); every feature leaves here through
`Qwen3VLBackbone.finish` (a Matryoshka cut to ``backbone.embed_dim``, L2 normalisation), so one
extraction serves every ``embed_dim``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import torch

from charfeat.console import progress
from charfeat.data.augment import augments
from charfeat.data.loader import Chunk, InputGroups, ViewSpec, input_batches
from charfeat.data.records import Record, record_text
from charfeat.data.sources.base import DataSource
from charfeat.features.cache import FeatureCache, alias_key, view_key
from charfeat.models.backbone.inputs import select_rows, split_on_oom
from charfeat.models.backbone.model import Qwen3VLBackbone

log = logging.getLogger(__name__)


GROUP_BATCHES = 2  # batches a worker prepares at once: sorted by length (less padding), not so many
# that the prepared inputs in flight grow large (32 images at 448² are 154 MB of float32 pixel patches)


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

    def forward(self, inputs: dict[str, torch.Tensor], stats: ExtractionStats | None = None) -> torch.Tensor:
        """Model inputs -> pooled backbone features [B, hidden_size] on the device (what the cache
        holds), without gradients; a batch that runs out of accelerator memory runs again as two halves."""
        if stats is not None:
            mask = inputs["attention_mask"]
            stats.batches += 1
            stats.tokens += mask.numel()
            stats.padding_tokens += int((mask == 0).sum())
            stats.batch_padding.append(float((mask == 0).sum()) / mask.numel())
        return split_on_oom(lambda batch: self.backbone.pool(**batch), inputs)

    def loader(self, data: DataSource, split: str, records: list[Record], groups: list[list[int]],
               view: ViewSpec = ViewSpec(), keyed: bool = False, whole_groups: bool = False,
               texts: list[str | None] | None = None):
        """The input pipeline over ``groups`` of ``records``: each item a list of `Chunk`s of at most
        ``batch_size`` images (``whole_groups``: a group's images at once, e.g. a P×K batch) and
        ``backbone.max_tokens_per_batch`` tokens. ``texts``: the records' `texts`, if the caller has them."""
        texts = self.texts(records) if texts is None else texts
        dataset = InputGroups(data, split, records, texts, groups, self.backbone.encoder,
                              None if whole_groups else self.batch_size, self.backbone.max_tokens_per_batch, view,
                              keyed or view.by_content)
        return input_batches(dataset, self.device)

    @torch.no_grad()
    def extract(self, data: DataSource, split: str, records: list[Record],
                then: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
                stats: ExtractionStats | None = None, view: ViewSpec = ViewSpec()) -> torch.Tensor:
        """Features [N, feature_dim] (or ``then(features)``) of every record, in order, gathered on the CPU.

        ``view``: which augmented view of each image (`ViewSpec`, by content); default: the image itself.
        """
        if not records:
            raise ValueError(f"no records to embed in split {split!r}")
        stats = stats if stats is not None else ExtractionStats()
        out: list[torch.Tensor | None] = [None] * len(records)
        texts = self.texts(records)
        aliases = self._found_by_alias(data, split, records, texts, out, stats, view)
        todo = [i for i, feature in enumerate(out) if feature is None]
        size = GROUP_BATCHES * self.batch_size
        groups = [todo[start:start + size] for start in range(0, len(todo), size)]
        with progress(total=len(records), initial=len(records) - len(todo), desc=f"embed {split}", unit="image",
                      leave=False) as bar:
            keyed = self.cache is not None
            batches = self.loader(data, split, records, groups, view, keyed, texts=texts) if groups else []
            for group, chunks in zip(groups, batches):
                for chunk in chunks:
                    self._extract_chunk(chunk, [group[p] for p in chunk.positions], out, aliases, view, stats)
                    bar.update(len(chunk.positions))
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

    def _found_by_alias(self, data: DataSource, split: str, records: list[Record], texts: list[str | None],
                        out: list, stats: ExtractionStats, view: ViewSpec) -> list[bytes | None]:
        """Fill ``out`` with the features the cache finds by each record's alias (its image unread);
        returns every record's alias (None where the source cannot identify the image)."""
        if self.cache is None:
            return [None] * len(records)
        aliases = [None if (identity := data.identity(split, r.filename)) is None else alias_key(identity, text)
                   for r, text in zip(records, texts)]
        keys = self.cache.resolve(aliases)
        known = [i for i, key in enumerate(keys) if key is not None]
        for i, feature in zip(known, self.cache.get(self._feature_keys([keys[i] for i in known], view))):
            out[i] = feature
        found = sum(out[i] is not None for i in known)
        stats.images += found
        stats.cache_hits += found
        stats.unread += found
        return aliases

    @staticmethod
    def _feature_keys(keys: list[bytes], view: ViewSpec) -> list[bytes]:
        """The cache keys of these images' features in ``view``: their own keys, or their views' keys."""
        if not augments(view.augment):
            return keys
        return [view_key(key, view.augment, view.stream) for key in keys]

    def _extract_chunk(self, chunk: Chunk, where: list[int], out: list, aliases: list[bytes | None],
                       view: ViewSpec, stats: ExtractionStats) -> None:
        """Fill ``out`` at ``where`` (the chunk's records' places): from the cache where it can, else from the backbone."""
        cache, todo, keys = self.cache, list(range(len(where))), None
        if cache is not None:
            cache.add_aliases([aliases[i] for i in where], chunk.keys)
            keys = self._feature_keys(chunk.keys, view)
            todo = []
            for i, cached in enumerate(cache.get(keys)):
                if cached is None:
                    todo.append(i)
                else:
                    out[where[i]] = cached
        stats.images += len(where)
        stats.cache_hits += len(where) - len(todo)
        stats.computed += len(todo)
        if not todo:
            return
        inputs = chunk.inputs if len(todo) == len(where) else select_rows(chunk.inputs, todo)
        features = self.forward(inputs, stats).float().cpu()
        if cache is not None:
            cache.put([keys[i] for i in todo], features)
        for i, row in zip(todo, features):
            out[where[i]] = row
