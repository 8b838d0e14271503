"""The data-source interface: records per split from local JSONL, image bytes from a store.

Local folders, the generated sample set and S3 differ only in how bytes are fetched, so the
training loop depends on this class alone. Images that fail to load raise an error naming
their location: nothing is ever replaced by a placeholder.
"""

import io
from abc import ABC, abstractmethod
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from charfeat.data.records import Record, read_records

SPLITS = ("train", "val")


class ImageLoadError(RuntimeError):
    """One or more images could not be fetched or decoded; lists every location."""


class DataSource(ABC):
    def __init__(self, root: str, train_jsonl: str, val_jsonl: str, label_field: str = "fashion_style"):
        self.root = Path(root).expanduser()
        self.jsonl = {"train": train_jsonl, "val": val_jsonl}
        self.label_field = label_field

    def jsonl_path(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        path = Path(self.jsonl[split]).expanduser()
        return path if path.is_absolute() else self.root / path

    def records(self, split: str) -> list[Record]:
        return read_records(self.jsonl_path(split), self.label_field)

    @abstractmethod
    def location(self, split: str, filename: str) -> str:
        """Where an image lives (a path or s3:// URL), for messages."""

    @abstractmethod
    def fetch_bytes(self, split: str, filenames: list[str]) -> list[bytes]:
        """The encoded bytes of each file, in order; raise ImageLoadError naming every failure."""

    def load_images(self, split: str, records: list[Record]) -> list[Image.Image]:
        """Fetch and decode a batch of images as RGB."""
        blobs = self.fetch_bytes(split, [r.filename for r in records])
        images, bad = [], []
        for record, blob in zip(records, blobs):
            try:
                with Image.open(io.BytesIO(blob)) as image:
                    images.append(image.convert("RGB"))
            except (UnidentifiedImageError, OSError) as err:
                bad.append(f"{self.location(split, record.filename)} (id {record.id}): {err}")
        if bad:
            raise ImageLoadError(f"{len(bad)} image(s) could not be decoded:\n  " + "\n  ".join(bad))
        return images
