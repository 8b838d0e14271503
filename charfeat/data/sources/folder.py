"""A bare local folder of images, no metadata (``data=folder``).

Something to embed (``charfeat.embed``), not to train or evaluate on, since there are no labels.
Both splits are all the images.
"""

from pathlib import Path

from charfeat.data.images import IMAGE_SUFFIXES
from charfeat.data.records import Record
from charfeat.data.sources.base import NO_METADATA
from charfeat.data.sources.local import LocalData


class FolderData(LocalData):
    labelled = False

    def __init__(self, root: str, image_dir: str, max_image_pixels: int | None, num_workers: int | None):
        super().__init__(root, image_dir=image_dir, max_image_pixels=max_image_pixels, num_workers=num_workers,
                         **NO_METADATA)

    def _prepare(self) -> dict[str, list[Record]]:
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"data.root: {self.image_dir} is not a folder")
        paths = sorted(p for p in self.image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise FileNotFoundError(f"data.root: no images ({', '.join(IMAGE_SUFFIXES)}) under {self.image_dir}")
        records = [Record(id=str(p.relative_to(self.image_dir).with_suffix("")),
                          filename=str(p.relative_to(self.image_dir)), label="") for p in paths]
        return {"train": records, "val": records}

    def jsonl_path(self, split: str) -> Path:
        return self.image_dir
