"""Every image object under an S3 prefix, no metadata (``data=s3_prefix``).

Something to embed (``charfeat.embed``), not to train or evaluate on, since there are no labels.
Both splits are all the images.
"""

from pathlib import Path

from charfeat.data.images import IMAGE_SUFFIXES
from charfeat.data.records import Record
from charfeat.data.sources.base import NO_METADATA
from charfeat.data.sources.s3 import S3AccessError, S3Data


class S3PrefixData(S3Data):
    """Every image object under ``s3://<bucket>/<prefix>``, no metadata: for ``charfeat.embed``."""

    labelled = False

    def __init__(self, bucket: str, prefix: str, **store):
        super().__init__(bucket, root=".", prefix=prefix, val_prefix=None, **NO_METADATA, **store)

    def _prepare(self) -> dict[str, list[Record]]:
        prefix = self.prefixes["train"]
        listing = self._listing("train")
        self._listable[prefix] = listing is not None
        self._etags.update(listing or {})
        if listing is None:
            raise S3AccessError(f"s3://{self.bucket}/{prefix}: listing is not allowed, so a bare prefix cannot be "
                                "embedded; describe the images in a JSONL file and use data=s3")
        names = sorted(key[len(prefix):] for key in listing if Path(key).suffix.lower() in IMAGE_SUFFIXES)
        if not names:
            raise FileNotFoundError(f"s3://{self.bucket}/{prefix}: no images ({', '.join(IMAGE_SUFFIXES)})")
        records = [Record(id=str(Path(name).with_suffix("")), filename=name, label="") for name in names]
        return {"train": records, "val": records}

    def jsonl_path(self, split: str) -> Path:
        return Path(self.location(split, ""))
