"""The data-source interface: records per split from local JSONL, image bytes from a store.

Local folders, the generated sample set and S3 differ only in how bytes are fetched, so the
training loop depends on this class alone. Records are read and checked once, both splits
together (the label mapping and a generated val split need the training file), and every
image is checked to exist before any model is built. A bad record or image is an error naming
it, or, under ``on_bad_record=skip``, left out and reported: never replaced by a placeholder.
How deeply each image is checked up front is ``data.verify_images`` (exists, header, every pixel).

A source may hold threads and connections (S3): it is a context manager, and ``close`` ends them.
"""

import functools
import logging
from abc import ABC, abstractmethod
from pathlib import Path

from PIL import Image

from charfeat.config import LabelField, OnBadRecord, OnLeak, Split, VerifyImages
from charfeat.data.images import try_decode, verify
from charfeat.data.labels import build_label_map, keep_known_labels
from charfeat.data.records import Issues, Record, read_records
from charfeat.data.split import grouped_split, stratified_split
from charfeat.errors import UserError

SPLITS = tuple(Split.__members__)
# What a source without metadata (a bare folder or S3 prefix, for charfeat.embed) gives DataSource:
# it reads no JSONL, so none of the record options applies, and a missing image is an error.
# Its images are checked when they are decoded.
NO_METADATA = dict(train_jsonl="", val_jsonl=None, label_field=None, on_bad_record=OnBadRecord.error,
                   drop_quality=(), keep_unknown=False, start_index=0, val_fraction=0.0, split_seed=0,
                   group_field=None, on_leak=OnLeak.error, duplicate_threshold=None, fingerprint_cache=None,
                   verify_images=VerifyImages.none)
CHECK_CHUNK = 64  # images fetched at once by the up-front check: bounds the encoded bytes in memory
# What data.verify_images found for each image identity (and check settings) in this process: the
# jobs of a sweep run in one process read each image for it once.
_VERIFIED: dict[tuple, str | None] = {}
log = logging.getLogger(__name__)


class ImageLoadError(UserError, RuntimeError):
    """One or more images could not be fetched or decoded; lists every location."""


class DataSource(ABC):
    """Records and images of the train and val splits. The arguments are the ``data`` config
    group's keys (``charfeat.config.RecordsConfig``: what every labelled source shares)."""

    labelled = True  # records carry class labels (a bare image folder does not)

    def __init__(self, root: str, train_jsonl: str, val_jsonl: str | None, label_field: LabelField,
                 on_bad_record: OnBadRecord, drop_quality: list[str] | tuple, keep_unknown: bool,
                 start_index: int, val_fraction: float, split_seed: int, group_field: str | None,
                 on_leak: OnLeak, duplicate_threshold: float | None, fingerprint_cache: str | None,
                 verify_images: VerifyImages, max_image_pixels: int | None, num_workers: int | None):
        self.root = Path(root).expanduser()
        self.verify_images, self.max_image_pixels = VerifyImages(verify_images), max_image_pixels
        self.num_workers = num_workers  # of the input pipeline (charfeat.data.loader)
        self.jsonl = {"train": train_jsonl, "val": val_jsonl}
        self.read_options = dict(label_field=label_field, drop_quality=tuple(drop_quality),
                                 keep_unknown=keep_unknown, start_index=start_index, group_field=group_field)
        self.leak_options = dict(group_field=group_field, on_leak=on_leak, duplicate_threshold=duplicate_threshold,
                                 fingerprint_cache=fingerprint_cache)
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.issues = Issues(on_bad_record)  # validates the policy name now, before any file is read
        self._records: dict[str, list[Record]] = {}

    def jsonl_path(self, split: str) -> Path:
        """The file a split's records come from (the training file for a generated val split)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        path = Path(self.jsonl[split] or self.jsonl["train"]).expanduser()
        return path if path.is_absolute() else self.root / path

    def records(self, split: str) -> list[Record]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not self._records:
            self._records = self._prepare()
        return self._records[split]

    def _prepare(self) -> dict[str, list[Record]]:
        issues = self.issues = Issues(self.issues.policy)
        splits = {"train": read_records(self.jsonl_path("train"), issues=issues, **self.read_options)}
        if self.jsonl["val"]:
            splits["val"] = read_records(self.jsonl_path("val"), issues=issues, **self.read_options)
        else:
            split = grouped_split if self.read_options["group_field"] else stratified_split
            splits["train"], splits["val"] = split(splits["train"], self.val_fraction, self.split_seed)
            log.info("no val file: %.0f%% of each class split off (seed %d%s)", 100 * self.val_fraction,
                     self.split_seed, ", whole groups" if split is grouped_split else "")
        for split, records in splits.items():
            splits[split] = self.check_images(split, records, issues)
        splits["val"] = keep_known_labels(splits["val"], build_label_map(splits["train"]),
                                          str(self.jsonl_path("val")), issues)
        for split, records in splits.items():
            if not records:
                raise ImageLoadError(f"{self.jsonl_path(split)}: no {split} records left to use")
        self._order = {split: [r.filename for r in records] for split, records in splits.items()}
        if issues.skipped or issues.filtered:
            log.warning("%s", self.describe_issues())
        return splits

    def describe_issues(self) -> str:
        """What was left out and why, one line each (locations and ids only, never content)."""
        lines = [f"left out by filter: {n} record(s) with {reason}" for reason, n in self.issues.filtered.items()]
        if self.issues.skipped:
            lines.append(f"skipped (data.on_bad_record=skip): {len(self.issues.skipped)}")
            lines += [f"  {item}" for item in self.issues.skipped]
        return "data: " + "\n".join(lines)

    def issue_summary(self) -> dict[str, int]:
        """Counts for the tracker: ``data/skipped`` and ``data/filtered``."""
        return {"data/skipped": len(self.issues.skipped), "data/filtered": sum(self.issues.filtered.values())}

    def check_images(self, split: str, records: list[Record], issues: Issues) -> list[Record]:
        """The records whose images pass ``data.verify_images``; the others are bad records.

        Under ``error`` every missing image is named at once before any is fetched, then every
        image that fails the check; under ``skip`` each is left out and reported. A fetch that
        fails only transiently is not a bad image: the source raises, and the run stops."""
        where = {r.filename: f"{self.location(split, r.filename)} (id {r.id}) at {self.jsonl_path(split)}:{r.line}"
                 for r in records}
        missing = self.missing(split, [r.filename for r in records])
        if missing and issues.policy == OnBadRecord.error:
            raise ImageLoadError(f"{len(missing)} {split} image(s) not found:\n  " + "\n  ".join(
                f"{where[name]}: {reason}" for name, reason in missing.items()))
        failed = dict(missing)
        present = [r for r in records if r.filename not in missing]
        if self.verify_images != VerifyImages.none:
            failed.update(self._verify(split, [r.filename for r in present]))
        if failed and issues.policy == OnBadRecord.error:
            raise ImageLoadError(f"{len(failed)} {split} image(s) cannot be used (data.verify_images="
                                 f"{self.verify_images}):\n  " + "\n  ".join(
                                     f"{where[name]}: {reason}" for name, reason in failed.items()))
        for record in records:
            if record.filename in failed:
                issues.bad(where[record.filename], failed[record.filename])
        return [r for r in records if r.filename not in failed]

    def _verify(self, split: str, filenames: list[str]) -> dict[str, str]:
        """{filename: why} for the images that fail ``data.verify_images``; decoded pixels are dropped at once.
        An image that this process checked before, unchanged (the same identity), is not read again."""
        check = functools.partial(verify, level=self.verify_images, max_pixels=self.max_image_pixels)
        keys = {name: (identity, self.verify_images, self.max_image_pixels)
                for name in filenames if (identity := self.identity(split, name)) is not None}
        reasons = {name: _VERIFIED[keys[name]] for name in filenames if keys.get(name) in _VERIFIED}
        todo = [name for name in filenames if name not in reasons]
        for start in range(0, len(todo), CHECK_CHUNK):
            names = todo[start:start + CHECK_CHUNK]
            blobs = self.fetch(split, names)
            for name, blob, reason in zip(names, blobs, self.map(lambda b: b if isinstance(b, str) else check(b), blobs)):
                reasons[name] = reason
                if name in keys and not isinstance(blob, str):  # a failed fetch is tried again next time
                    _VERIFIED[keys[name]] = reason
        return {name: reasons[name] for name in filenames if reasons[name]}

    def identity(self, split: str, filename: str) -> str | None:
        """What identifies an image's bytes without reading them (a file's path, size and times; an S3
        object's ETag), for the feature cache to find its feature by; None where only the bytes do."""
        return None

    @abstractmethod
    def missing(self, split: str, filenames: list[str]) -> dict[str, str]:
        """{filename: why} for the files that cannot be found (or may not be read), found as cheaply
        as the store allows, in ``filenames`` order."""

    @abstractmethod
    def fetch(self, split: str, filenames: list[str]) -> list[bytes | str]:
        """The encoded bytes of each file, in order, or a reason string for each that failed."""

    def fetch_bytes(self, split: str, filenames: list[str]) -> list[bytes]:
        """Like fetch, but any failure raises ImageLoadError naming every failed location."""
        results = self.fetch(split, filenames)
        failed = [f"{self.location(split, name)}: {result}" for name, result in zip(filenames, results)
                  if isinstance(result, str)]
        if failed:
            raise ImageLoadError(f"{len(failed)} image(s) could not be fetched:\n  " + "\n  ".join(failed))
        return results

    def read_ahead_within(self, split: str, filenames: list[str]) -> None:
        """From now on, read ahead (if this store does) only among ``filenames``: an input-pipeline
        worker reads one group of records; the records after it are another worker's."""

    def map(self, fn, items: list) -> list:
        """Apply ``fn`` to each item; stores with a thread pool run it there (PIL decodes without the GIL)."""
        return list(map(fn, items))

    def load_images(self, split: str, records: list[Record], at_least: int | None = None) -> list[Image.Image]:
        """Fetch and decode a batch of images as upright RGB (``at_least``: see `decode`)."""
        blobs = self.fetch_bytes(split, [r.filename for r in records])
        images = self.map(functools.partial(try_decode, max_pixels=self.max_image_pixels, at_least=at_least), blobs)
        bad = [f"{self.location(split, record.filename)} (id {record.id}): {image}"
               for record, image in zip(records, images) if isinstance(image, str)]
        if bad:
            raise ImageLoadError(f"{len(bad)} image(s) could not be decoded:\n  " + "\n  ".join(bad))
        return images

    def close(self) -> None:
        """End whatever the source holds (threads, connections); it may be used again after."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
