"""charfeat's caches on disk: written private to the user, listed, pruned by age, cleared.

Under the cache dir (``CHARFEAT_CACHE_DIR``, else ``~/.cache/charfeat``; ``paths.cache_dir`` in a
run): ``s3/`` holds objects fetched from S3 (people's photos), ``features/`` frozen-backbone
features, ``sample_data/`` the generated sample sets. Directories charfeat creates there are 0700
and files 0600, whatever the umask. Each entry's mtime is refreshed when a run uses it, so
``prune --older-than 30d`` removes what no run has used for 30 days. Only what charfeat writes
(by its names) is ever removed: anything else in those folders is left alone.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

S3_ENTRY = re.compile(r"[0-9a-f]{64}")
FEATURE_DIR = re.compile(r"[0-9a-f]{24}")
SAMPLE_DIR = re.compile(r"v\d+-\d+cls-\d+\+\d+-\d+px-seed-?\d+")
TMP = re.compile(r"\..+\.tmp")
DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def default_root() -> Path:
    return Path(os.environ.get("CHARFEAT_CACHE_DIR") or Path.home() / ".cache" / "charfeat").expanduser()


def private_dir(path: str | os.PathLike) -> Path:
    """``path`` as a directory; each component this call creates is 0700 (existing ones are left as they are)."""
    target = Path(path)
    missing = [p for p in (target, *target.parents) if not p.is_dir()]
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile by a concurrent writer
        os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask
    return target


def write_private(path: Path, data: bytes, tmp_suffix: str | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temp file, then rename), readable by the user alone."""
    tmp = path.with_name(f".{path.name}.{tmp_suffix or uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def touch(path: Path) -> None:
    """Mark an entry as used now (for ``prune``); a read-only cache is simply not marked."""
    try:
        os.utime(path)
    except OSError:
        pass


@dataclass
class Entry:
    """One removable unit of a cache: a file, or a directory removed whole."""

    path: Path
    size: int
    used: float  # mtime: when a run last wrote or used it


def _file(path: Path) -> Entry | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return Entry(path, stat.st_size, stat.st_mtime)


def _s3_entries(root: Path) -> Iterator[Entry]:
    for shard in sorted(root.glob("??")):
        for path in sorted(shard.iterdir()) if shard.is_dir() else ():
            if S3_ENTRY.fullmatch(path.name) or TMP.fullmatch(path.name):
                entry = _file(path)
                if entry:
                    yield entry


def _feature_entries(root: Path) -> Iterator[Entry]:
    for config in sorted(p for p in root.iterdir() if p.is_dir() and FEATURE_DIR.fullmatch(p.name)):
        for path in sorted(config.iterdir()):
            if (path.name.startswith(("shard-", "alias-")) and path.suffix == ".safetensors") or TMP.fullmatch(path.name):
                entry = _file(path)
                if entry:
                    yield entry


def _sample_entries(root: Path) -> Iterator[Entry]:
    for path in sorted(root.iterdir()):
        if path.is_dir() and SAMPLE_DIR.fullmatch(path.name) and (path / "manifest.json").is_file():
            files = [p.stat().st_size for p in path.rglob("*") if p.is_file()]
            yield Entry(path, sum(files), (path / "manifest.json").stat().st_mtime)


CACHES: dict[str, Callable[[Path], Iterator[Entry]]] = {
    "s3": _s3_entries, "features": _feature_entries, "fingerprints": _feature_entries,  # the same layout
    "sample_data": _sample_entries}


def entries(root: Path, name: str) -> list[Entry]:
    folder = Path(root) / name
    return list(CACHES[name](folder)) if folder.is_dir() else []


def remove(entry: Entry) -> None:
    if entry.path.is_dir():
        shutil.rmtree(entry.path)
    else:
        entry.path.unlink(missing_ok=True)
        parent = entry.path.parent
        if FEATURE_DIR.fullmatch(parent.name) and not any(parent.glob("*-*.safetensors")):
            (parent / "key.json").unlink(missing_ok=True)  # a feature configuration left without features
        _remove_if_empty(parent)


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass  # not empty, or not ours to remove


def prune(root: Path, older_than: float, names: list[str]) -> tuple[int, int]:
    """Remove entries not used for ``older_than`` seconds; (entries, bytes) removed."""
    cutoff = time.time() - older_than
    old = [entry for name in names for entry in entries(root, name) if entry.used < cutoff]
    for entry in old:
        remove(entry)
    return len(old), sum(entry.size for entry in old)


def clear(root: Path, names: list[str]) -> tuple[int, int]:
    """Remove every entry of the named caches; (entries, bytes) removed."""
    return prune(root, -1e12, names)


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``2w``, ``90m``, ``45s`` -> seconds."""
    match = DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"--older-than {text!r}: expected a number and a unit (s, m, h, d, w), e.g. 30d")
    return float(match.group(1)) * UNITS[match.group(2)]
