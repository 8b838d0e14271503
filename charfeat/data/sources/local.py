"""Images in a local folder: ``<root>/<image_dir>/<filename>``, and nowhere else.

A filename is checked when its record is read (no absolute path, no ``..``); here the resolved
path must also stay inside the image folder, so a symlink in it cannot point training at any
other file on the machine.
"""

import os
import stat
from functools import cached_property
from pathlib import Path

from charfeat.data.sources.base import DataSource


class LocalData(DataSource):
    def __init__(self, root: str, train_jsonl: str, val_jsonl: str | None, image_dir: str, **options):
        super().__init__(root, train_jsonl, val_jsonl, **options)
        self.image_dir = self.root / image_dir

    def location(self, split: str, filename: str) -> str:
        return str(self.image_dir / filename)

    @cached_property
    def folder(self) -> str:
        """The image folder, symlinks resolved (once: a run's folder does not move)."""
        return os.path.realpath(self.image_dir)

    def resolved(self, filename: str) -> tuple[str, os.stat_result | None]:
        """The file's path with symlinks resolved, and its stat (None: no such file). Cheap in the
        usual case, no link below the image folder: one lstat per part of ``filename`` instead of
        a realpath walk from / (a million images are a million calls); a link is resolved."""
        parts = (filename,) if "/" not in filename and filename not in (".", "..") else Path(filename).parts
        if ".." not in parts:
            path = os.path.join(self.folder, *parts)
            try:
                for depth in range(1, len(parts)):
                    if stat.S_ISLNK(os.lstat(os.path.join(self.folder, *parts[:depth])).st_mode):
                        break
                else:
                    st = os.lstat(path)
                    if not stat.S_ISLNK(st.st_mode):
                        return path, st
            except OSError:
                return path, None
        path = os.path.realpath(self.image_dir / filename)
        try:
            return path, os.stat(path)
        except OSError:
            return path, None

    def identity(self, split: str, filename: str) -> str | None:
        """The resolved path with its inode, size, mtime and ctime: a rewrite, a copy over it or a
        restore that keeps the old mtime (which still sets a new ctime) each changes it."""
        path, st = self.resolved(filename)
        if st is None:
            return None
        return f"file:{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"

    def missing(self, split: str, filenames: list[str]) -> dict[str, str]:
        missing = {}
        for name in filenames:
            path, st = self.resolved(name)
            if not path.startswith(os.path.join(self.folder, "")):
                missing[name] = f"resolves to {path}, outside the image folder {self.folder}"
            elif st is None or not stat.S_ISREG(st.st_mode):
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
