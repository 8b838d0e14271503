"""The S3 object cache: fetched objects on local disk, keyed by bucket, key and ETag.

A changed object has a new ETag, so a stale entry is never served. Entries are written to a
temporary file and renamed (readers never see half a file), and carry a SHA-256 of their
payload, so a truncated or corrupted entry is detected, removed and fetched again.
"""

import hashlib
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)
DIGEST = 32


class S3ObjectCache:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def path(self, bucket: str, key: str, etag: str) -> Path:
        name = hashlib.sha256(f"{bucket}\0{key}\0{etag}".encode()).hexdigest()
        return self.root / name[:2] / name

    def get(self, bucket: str, key: str, etag: str) -> bytes | None:
        path = self.path(bucket, key, etag)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        payload, digest = data[:-DIGEST], data[-DIGEST:]
        if len(data) < DIGEST or hashlib.sha256(payload).digest() != digest:
            log.warning("corrupt cache entry for s3://%s/%s (%s): fetching it again", bucket, key, path)
            path.unlink(missing_ok=True)
            return None
        return payload

    def put(self, bucket: str, key: str, etag: str, payload: bytes) -> None:
        path = self.path(bucket, key, etag)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(payload + hashlib.sha256(payload).digest())
        os.replace(tmp, path)
