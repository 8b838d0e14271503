"""Images in a local folder: ``<root>/<image_dir>/<filename>``."""

from pathlib import Path

from charfeat.data.source import DataSource, ImageLoadError


class LocalData(DataSource):
    def __init__(self, root: str, train_jsonl: str, val_jsonl: str, image_dir: str = "images",
                 label_field: str = "fashion_style"):
        super().__init__(root, train_jsonl, val_jsonl, label_field)
        self.image_dir = self.root / image_dir

    def location(self, split: str, filename: str) -> str:
        return str(self.image_dir / filename)

    def fetch_bytes(self, split: str, filenames: list[str]) -> list[bytes]:
        paths = [Path(self.location(split, name)) for name in filenames]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ImageLoadError(f"{len(missing)} image(s) not found:\n  " + "\n  ".join(missing))
        return [p.read_bytes() for p in paths]
