"""The input pipeline: records -> model inputs, built in DataLoader worker processes.

Fetching, decoding, augmenting and the processor's resize/normalise are CPU work a GPU would wait
on; `input_batches` runs them in ``data.num_workers`` processes (each with its own S3 client, since
a source's client and threads are created anew after a fork) while the model works, and delivers
the groups of records in the order given, so P×K batches, resume and torchrun are as without it.

Each group of records becomes `Chunk`s: the group's images are decoded a window at a time, at most
`WINDOW_BYTES` of pixels (a folder of 12-megapixel photos must not hold gigabytes), sorted by
sequence length, and encoded in chunks of at most ``max_size`` rows and ``max_tokens`` padded tokens
(``backbone.max_tokens_per_batch``). Augmentation (``augment``) happens here, seeded per view.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from charfeat.data.augment import Augment, augments
from charfeat.data.records import Record
from charfeat.data.sources.base import DataSource
from charfeat.errors import ConfigError, UserError
from charfeat.features.cache import item_key
from charfeat.models.backbone.encoder import InputEncoder
from charfeat.models.backbone.inputs import token_batches

# Decoded pixels a worker holds at once (a window of 8 batches of 12 MP photos at batch 32 was
# ~9 GB). Small images fill a whole group (1,700 of 224 px fit), so sorting by length keeps working;
# large ones are resized to the same pixel budget anyway, so their order hardly matters.
WINDOW_BYTES = 256 * 1024 * 1024
MAX_DEFAULT_WORKERS = 8


def core_share() -> int:
    """This process's share of the cores it may run on: torchrun starts LOCAL_WORLD_SIZE processes per node."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def worker_count(configured: int | None) -> int:
    """``data.num_workers``, or for null this process's share of the cores less one for the
    process itself, at most 8."""
    if configured is not None:
        return configured
    return max(0, min(MAX_DEFAULT_WORKERS, core_share() - 1))


@dataclass
class Chunk:
    """Model inputs of some of a group's records: their ``positions`` in the group (a P×K batch may
    hold a record twice) and, when asked for, their images' content keys (`item_key`, before any
    augmentation)."""

    positions: list[int]
    inputs: dict[str, torch.Tensor]
    keys: list[bytes] | None = None

    def pin_memory(self) -> "Chunk":
        """Page-locked copies, for asynchronous copies to a GPU (the DataLoader calls this with pin_memory)."""
        return Chunk(self.positions, {k: v.pin_memory() for k, v in self.inputs.items()}, self.keys)


@dataclass(frozen=True)
class ViewSpec:
    """Which view of each image to encode: ``augment`` seeded by (``stream``, the record's position in
    its split), for a trainable backbone's epochs; or, with ``by_content``, by (``stream``, the image's
    content key), for the views a frozen backbone caches (keyed by `view_key`)."""

    augment: Augment | None = None
    stream: int = 0
    by_content: bool = False


class InputGroups(Dataset):
    """Item ``i``: the records at ``groups[i]`` (positions in ``records``, a split) as a list of `Chunk`s.

    ``texts`` are the records' texts beside the image; chunks hold at most ``max_size`` images (None:
    a whole group) and ``max_tokens`` padded tokens; ``keyed``: compute content keys (feature cache)."""

    def __init__(self, data: DataSource, split: str, records: list[Record], texts: list[str | None],
                 groups: list[list[int]], encoder: InputEncoder, max_size: int | None, max_tokens: int | None,
                 view: ViewSpec = ViewSpec(), keyed: bool = False):
        self.data, self.split, self.records, self.texts, self.groups = data, split, records, texts, groups
        self.encoder, self.max_size, self.max_tokens, self.view, self.keyed = encoder, max_size, max_tokens, view, keyed
        encoder.processor  # noqa: B018 - read here, once, not by every worker

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> list[Chunk] | UserError:
        """The group's chunks; in a worker, a `UserError` (an image that cannot be read, a config
        error) is returned, for `input_batches` to raise as itself in the training process: the
        DataLoader would wrap it in a worker traceback."""
        try:
            return self._prepare(self.groups[index])
        except UserError as err:
            if get_worker_info() is None:
                raise
            return err

    def _prepare(self, group: list[int]) -> list[Chunk]:
        if get_worker_info() is not None:  # read ahead within this group only: the next belongs to another worker
            self.data.read_ahead_within(self.split, [self.records[p].filename for p in group])
        augment, chunks = self.view.augment, []
        records = [self.records[p] for p in group]
        for offset, images in windows(self.data, self.split, records, len(group), WINDOW_BYTES):
            where = list(range(offset, offset + len(images)))
            texts = [self.texts[group[w]] for w in where]
            keys = [item_key(image, text) for image, text in zip(images, texts)] if self.keyed else None
            if augments(augment):
                seeds = keys if self.view.by_content else [group[w] for w in where]
                images = [augment(image, augment.rng(self.view.stream, seed)) for image, seed in zip(images, seeds)]
            lengths = [self.encoder.sequence_length(image, text) for image, text in zip(images, texts)]
            self._check_lengths([group[w] for w in where], lengths)
            order = sorted(range(len(images)), key=lengths.__getitem__)
            for batch in token_batches([lengths[i] for i in order], self.max_size, self.max_tokens):
                rows = [order[i] for i in batch]
                chunks.append(Chunk([where[r] for r in rows],
                                    self.encoder.preprocess([images[r] for r in rows], [texts[r] for r in rows]),
                                    None if keys is None else [keys[r] for r in rows]))
            del images
        return chunks

    def _check_lengths(self, where: list[int], lengths: list[int]) -> None:
        """An image whose input alone exceeds ``backbone.max_tokens_per_batch`` is a config error naming it."""
        if self.max_tokens is None:
            return
        for position, length in zip(where, lengths):
            if length > self.max_tokens:
                record = self.records[position]
                raise ConfigError(f"{self.data.location(self.split, record.filename)} (id {record.id}): its input is "
                                  f"{length} tokens, more than backbone.max_tokens_per_batch={self.max_tokens}; raise "
                                  "it, or lower backbone.max_pixels")


def _quiet_worker(worker_id: int) -> None:
    """A worker ignores the stop signals: the training process handles them (it finishes its step,
    saves and stops the workers); a worker killed by one would fail that step instead."""
    for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR2", None)):
        if signum is not None:
            signal.signal(signum, signal.SIG_IGN)


def input_batches(dataset: InputGroups, device: torch.device) -> Iterator[list[Chunk]]:
    """The groups of ``dataset`` in order, prepared by ``data.num_workers`` worker processes (none for a
    single group: nothing would overlap), pinned for a CUDA ``device``. Closing it ends the workers."""
    workers = min(worker_count(dataset.data.num_workers), len(dataset) - 1)
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=max(workers, 0),
                        pin_memory=device.type == "cuda", worker_init_fn=_quiet_worker if workers > 0 else None,
                        collate_fn=_as_is, generator=torch.Generator())  # the global RNG is the run's: untouched
    for item in loader:
        if isinstance(item, UserError):
            raise item
        yield item


def _as_is(item):
    return item


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
