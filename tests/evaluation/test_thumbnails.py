"""Suspects' thumbnails: made once per unchanged image in a process (a sweep's jobs show the same ones)."""

import io
from types import SimpleNamespace

from PIL import Image

from charfeat.data.records import Record
from charfeat.evaluation import final


class Images:
    """The DataSource methods `thumbnails` uses, counting the images it decodes."""

    def __init__(self, identities: dict[str, str | None]):
        self.identities, self.decoded = identities, []

    def identity(self, split, filename):
        return self.identities[filename]

    def load_images(self, split, records):
        self.decoded += [r.filename for r in records]
        return [Image.new("RGB", (300, 200), (len(r.filename) * 20, 10, 10)) for r in records]


def suspect(name: str, *neighbours: str) -> dict:
    return {"filename": name, "neighbours": [{"filename": n} for n in neighbours]}


def test_an_unchanged_image_is_decoded_once_per_process(monkeypatch):
    monkeypatch.setattr(final, "_THUMBNAILS", {})
    data = Images({"a.jpg": "file:a:1", "bb.jpg": "file:bb:1", "ccc.jpg": None})  # ccc: no identity
    split = SimpleNamespace(data=data, split="val", records=[Record(n, n, "x") for n in data.identities])
    first = final.thumbnails(split, [suspect("a.jpg", "bb.jpg", "ccc.jpg")])
    assert list(first) == ["a.jpg", "bb.jpg", "ccc.jpg"] and data.decoded == ["a.jpg", "bb.jpg", "ccc.jpg"]
    assert Image.open(io.BytesIO(first["a.jpg"])).size == (final.THUMBNAIL, 96)

    data.identities["bb.jpg"] = "file:bb:2"  # rewritten since: decoded again
    second = final.thumbnails(split, [suspect("ccc.jpg", "a.jpg", "bb.jpg")])
    assert data.decoded[3:] == ["ccc.jpg", "bb.jpg"] and second["a.jpg"] == first["a.jpg"]
    assert list(second) == ["ccc.jpg", "a.jpg", "bb.jpg"]
