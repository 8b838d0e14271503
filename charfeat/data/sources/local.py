"""Images in a local folder: ``<root>/<image_dir>/<filename>``."""

from pathlib import Path

from charfeat.data.sources.base import DataSource


class LocalData(DataSource):
    def __init__(self, root: str, train_jsonl: str, val_jsonl: str | None, image_dir: str, **options):
        super().__init__(root, train_jsonl, val_jsonl, **options)
        self.image_dir = self.root / image_dir

    def location(self, split: str, filename: str) -> str:
        return str(self.image_dir / filename)

    def missing(self, split: str, filenames: list[str]) -> list[str]:
        return [name for name in filenames if not (self.image_dir / name).is_file()]

    def fetch(self, split: str, filenames: list[str]) -> list[bytes | str]:
        results: list[bytes | str] = []
        for name in filenames:
            try:
                results.append(Path(self.image_dir / name).read_bytes())
            except OSError as err:
                results.append(f"not readable ({err.strerror})")
        return results
