"""Images in a local folder: ``<root>/<image_dir>/<filename>``, and nowhere else.

A filename is checked when its record is read (no absolute path, no ``..``); here the resolved
path must also stay inside the image folder, so a symlink in it cannot point training at any
other file on the machine.
"""

from pathlib import Path

from charfeat.data.sources.base import DataSource


class LocalData(DataSource):
    def __init__(self, root: str, train_jsonl: str, val_jsonl: str | None, image_dir: str, **options):
        super().__init__(root, train_jsonl, val_jsonl, **options)
        self.image_dir = self.root / image_dir

    def location(self, split: str, filename: str) -> str:
        return str(self.image_dir / filename)

    def identity(self, split: str, filename: str) -> str | None:
        """The resolved path with its inode, size, mtime and ctime: a rewrite, a copy over it or a
        restore that keeps the old mtime (which still sets a new ctime) each changes it."""
        path = (self.image_dir / filename).resolve()
        try:
            st = path.stat()
        except OSError:
            return None
        return f"file:{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"

    def missing(self, split: str, filenames: list[str]) -> dict[str, str]:
        folder = self.image_dir.resolve()
        missing = {}
        for name in filenames:
            path = self.image_dir / name
            if not path.resolve().is_relative_to(folder):
                missing[name] = f"resolves to {path.resolve()}, outside the image folder {folder}"
            elif not path.is_file():
                missing[name] = "not found"
        return missing

    def fetch(self, split: str, filenames: list[str]) -> list[bytes | str]:
        results: list[bytes | str] = []
        for name in filenames:
            try:
                results.append(Path(self.image_dir / name).read_bytes())
            except OSError as err:
                results.append(f"not readable ({err.strerror})")
        return results
