"""What identifies a model's weights and processor files exactly, for keys of derived data.

A local directory is identified by a content hash of its files; a hub id by the commit of the
cached snapshot that `from_pretrained` resolved.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def _files_fingerprint(directory: Path) -> str:
    """SHA-256 over every file's relative name and content (symlinks followed), hidden ones left out
    (``.cache/huggingface/`` holds a download's bookkeeping when charfeat.download fetched into the dir)."""
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)):
        h.update(str(path.relative_to(directory)).encode() + b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def model_revision(name_or_path: str, revision: str | None = None) -> str:
    """What identifies the weights and processor files exactly.

    A local directory: a content hash of its files, memoised in this process by their sizes and
    mtimes (a 4 GB checkpoint is hashed once per process, and again only when a file changes).
    A hub id: the commit of the cached snapshot that `from_pretrained` resolved.
    """
    path = Path(name_or_path)
    if path.is_dir():
        stats = tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns)
                             for p in path.rglob("*") if p.is_file()))
        if stats not in _FINGERPRINTS:
            _FINGERPRINTS[stats] = "sha256:" + _files_fingerprint(path)
        return _FINGERPRINTS[stats]
    from huggingface_hub import snapshot_download

    from charfeat.models.backbone.hub import MODEL_FILES  # what was fetched: the rest of the repo is not "missing"

    snapshot = Path(snapshot_download(name_or_path, revision=revision, allow_patterns=MODEL_FILES,
                                      local_files_only=True))
    return "commit:" + snapshot.name


_FINGERPRINTS: dict[tuple, str] = {}
