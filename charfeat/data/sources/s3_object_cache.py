"""The S3 object cache: fetched objects on local disk, one entry per bucket and key, holding its ETag.

An entry is served only for the ETag the store gives now (from the listing, or from the HEAD
that checks each key when listing is not allowed), so a changed object is fetched again and
replaces its entry. Entries are written to a temporary file and renamed (readers never see half
a file), carry a SHA-256 of their ETag and payload (a truncated or corrupted entry is detected,
removed and fetched again), and are private to the user (0700 directories, 0600 files): they are
people's photos. A hit refreshes the entry's mtime, which ``python -m charfeat.cache prune`` reads.
A cache that cannot be written is warned about once and the run goes on without it.
"""

import hashlib
import logging
import os
import threading
from pathlib import Path

from charfeat.caches import private_dir, touch, write_private

log = logging.getLogger(__name__)
MAGIC = b"charfeat-s3-object 2\n"
DIGEST = 32
_warn_once = threading.Lock()  # module-level: a cache travels to worker processes by pickle


def entry_name(bucket: str, key: str) -> str:
    return hashlib.sha256(f"{bucket}\0{key}".encode()).hexdigest()


class S3ObjectCache:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.writable = True

    def path(self, bucket: str, key: str) -> Path:
        name = entry_name(bucket, key)
        return self.root / name[:2] / name

    def get(self, bucket: str, key: str, etag: str) -> bytes | None:
        """The cached object if its entry is intact and holds this ETag; else None."""
        path = self.path(bucket, key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        header, _, rest = data.partition(b"\n")
        stored, _, rest = rest.partition(b"\n")
        payload, digest = rest[:-DIGEST], rest[-DIGEST:]
        if (header + b"\n" != MAGIC or len(rest) < DIGEST
                or hashlib.sha256(stored + b"\n" + payload).digest() != digest):
            log.warning("corrupt cache entry for s3://%s/%s (%s): fetching it again", bucket, key, path)
            path.unlink(missing_ok=True)
            return None
        if stored.decode() != etag:
            return None  # the object changed since: fetched again, and its entry replaced
        touch(path)
        return payload

    def put(self, bucket: str, key: str, etag: str, payload: bytes) -> None:
        """Store the object; an unwritable cache is warned about once, then left alone."""
        if not self.writable:
            return
        path = self.path(bucket, key)
        body = etag.encode() + b"\n" + payload
        try:
            private_dir(path.parent)
            write_private(path, MAGIC + body + hashlib.sha256(body).digest(),
                          tmp_suffix=f"{os.getpid()}.{threading.get_ident()}")
        except OSError as err:
            with _warn_once:
                if self.writable:
                    self.writable = False
                    log.warning("S3 cache %s cannot be written (%s); going on without caching objects", self.root,
                                err)
