"""Images in S3 (or MinIO, R2, Ceph, any S3 endpoint): ``s3://<bucket>/<prefix><filename>``.

Speed: a batch's objects are fetched concurrently, the next ``prefetch`` images of the split
are fetched ahead of the model, and a disk cache checked against each object's ETag serves later
epochs and runs. Trust: every key is checked before training starts, with one listing per prefix
or, for a role that may read but not list (``s3:GetObject`` without ``s3:ListBucket``), one HEAD
per key, whose ETag then keys the disk cache, so a second run reads it without listing. Each
object is read within one retry budget and checked as strongly as it allows (`s3_object`).
A missing object (or, without listing rights, a 403, which is how S3 answers then) is a bad
record: an error naming every one, or under ``skip`` left out and reported; an object still
failing transiently when its budget is spent stops the run. Never a placeholder.

Credentials come only from boto3's standard chain and are never stored here. The client and
thread pool are created lazily in each process (they survive neither pickling nor fork), and
``close`` (or leaving a ``with`` block) ends the threads and cancels read-ahead no one will use.
"""

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlparse

from charfeat.config import RetryMode
from charfeat.data.sources.base import DataSource
from charfeat.data.sources.s3_errors import (DENIED_CODES, MISSING_CODES, S3AccessError, S3TransientError,
                                             access_error, error_code)
from charfeat.data.sources.s3_object import ObjectReader
from charfeat.data.sources.s3_object_cache import S3ObjectCache

__all__ = ["S3AccessError", "S3Data", "S3TransientError", "make_client"]
log = logging.getLogger(__name__)
MISSING_OR_DENIED = "missing or not permitted (403: without s3:ListBucket, S3 answers 403 for a missing key)"


def make_client(region: str | None = "us-east-1", endpoint_url: str | None = None, profile: str | None = None,
                retry_mode: str = "standard", max_attempts: int = 5, max_workers: int = 16,
                connect_timeout: float = 5.0, read_timeout: float = 30.0, session=None):
    """An S3 client with botocore retries and a connection pool as large as the thread pool."""
    import boto3
    from botocore.config import Config

    session = session or boto3.session.Session(profile_name=profile, region_name=region)
    return session.client("s3", endpoint_url=endpoint_url, config=Config(
        retries={"mode": str(retry_mode), "total_max_attempts": max_attempts},
        max_pool_connections=max_workers, connect_timeout=connect_timeout, read_timeout=read_timeout))


class S3Data(DataSource):
    """Records from local JSONL, images from S3; the arguments are the ``data=s3`` config group's keys
    (``charfeat.config.S3DataConfig``)."""

    def __init__(self, bucket: str, root: str, train_jsonl: str, val_jsonl: str | None, prefix: str,
                 val_prefix: str | None, region: str | None, endpoint_url: str | None, profile: str | None,
                 retry_mode: RetryMode, max_attempts: int, object_deadline_s: float, connect_timeout: float,
                 read_timeout: float, max_workers: int, prefetch: int, cache_dir: str | None, **options):
        super().__init__(root, train_jsonl, val_jsonl, **options)
        if endpoint_url and (urlparse(endpoint_url).username or urlparse(endpoint_url).password):
            raise ValueError("data.endpoint_url must not carry credentials: use the environment or data.profile")
        if max_attempts < 1 or max_workers < 1 or prefetch < 0 or object_deadline_s <= 0:
            raise ValueError("data.max_attempts and data.max_workers must be >= 1, data.prefetch >= 0, "
                             "data.object_deadline_s > 0")
        self.bucket = bucket
        self.prefixes = {"train": prefix, "val": prefix if val_prefix is None else val_prefix}
        self.region, self.endpoint_url, self.profile = region, endpoint_url, profile
        self.retry_mode, self.max_attempts, self.object_deadline_s = retry_mode, max_attempts, object_deadline_s
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.max_workers, self.prefetch = max_workers, prefetch
        self.cache = S3ObjectCache(cache_dir) if cache_dir else None
        self._listable: dict[str, bool] = {}  # prefix -> may it be listed
        self._etags: dict[str, str] = {}  # key -> ETag, from the listing or from HEAD
        self._reset()

    @property
    def endpoint(self) -> str:
        return self.endpoint_url or f"for region {self.region}"

    def _reset(self) -> None:
        self._session = self._client = self._pool = self._decoders = None
        self._reader = ObjectReader(self.bucket, self.max_attempts, self.object_deadline_s, self.endpoint)
        self._pending: dict[tuple[str, str], Future] = {}
        self._pid = os.getpid()

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_session=None, _client=None, _pool=None, _decoders=None, _reader=None, _pending={}, _pid=None)
        return state

    def _make_client(self, max_attempts: int):
        if self._session is None:  # one per process: a second client from it skips reloading the API model
            import boto3

            self._session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
        return make_client(self.region, self.endpoint_url, self.profile, self.retry_mode, max_attempts,
                           self.max_workers, self.connect_timeout, self.read_timeout, self._session)

    @property
    def client(self):
        if self._pid != os.getpid():
            self._reset()
        if self._client is None:
            self._client = self._make_client(self.max_attempts)
            self._reader.install(self._client)
        return self._client

    @property
    def pool(self) -> ThreadPoolExecutor:
        self.client  # noqa: B018 -- resets after a fork, and is created once before threads share it
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="charfeat-s3")
        return self._pool

    def close(self) -> None:
        """Cancel read-ahead not yet started, wait for the fetches in flight, end the threads."""
        if self._pid != os.getpid():  # a forked copy: the parent's threads are not here
            self._reset()
            return
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        for pool in (self._pool, self._decoders):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._decoders = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def map(self, fn, items: list) -> list:
        """Decode (PIL releases the GIL) in a pool of its own, so it never waits behind read-ahead."""
        self.client  # noqa: B018 -- resets after a fork
        if self._decoders is None:
            self._decoders = ThreadPoolExecutor(min(self.max_workers, os.cpu_count() or 1),
                                                thread_name_prefix="charfeat-decode")
        return list(self._decoders.map(fn, items))

    def key(self, split: str, filename: str) -> str:
        return self.prefixes[split] + filename

    def location(self, split: str, filename: str) -> str:
        return f"s3://{self.bucket}/{self.key(split, filename)}"

    def identity(self, split: str, filename: str) -> str | None:
        """The object's endpoint, bucket, key and the ETag that the listing or a HEAD gave this run."""
        key = self.key(split, filename)
        etag = self._etags.get(key)
        return f"s3:{self.endpoint_url or self.region}:{self.bucket}/{key}:{etag}" if etag else None

    def _listing(self, split: str) -> dict[str, str] | None:
        """{key: etag} under the split's prefix, listed once; None where listing is not allowed."""
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = self.prefixes[split]
        where = f"s3://{self.bucket}/{prefix}"
        self.client  # noqa: B018 -- resets the session after a fork
        try:  # two attempts at the read timeout: a wrong endpoint or credentials, or a silent server, fail in seconds
            self._make_client(2).list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        except (BotoCoreError, ClientError) as err:
            if error_code(err) in DENIED_CODES:
                return None
            fatal = access_error(err, where, self.endpoint)
            if fatal or not isinstance(err, ClientError):
                raise fatal or S3AccessError(f"{where}: listing failed ({type(err).__name__}: {err})") from None
            # the server answered (5xx, throttling): the listing below has the full retry budget
        listing: dict[str, str] = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                listing.update({obj["Key"]: obj["ETag"].strip('"') for obj in page.get("Contents", [])})
        except (BotoCoreError, ClientError) as err:
            raise access_error(err, where, self.endpoint) or S3TransientError(
                f"{where}: listing still failing after data.max_attempts={self.max_attempts} ({type(err).__name__}: "
                f"{err}); run again later") from None
        return listing

    def missing(self, split: str, filenames: list[str]) -> dict[str, str]:
        prefix = self.prefixes[split]
        listing = self._listing(split) if prefix not in self._listable else None
        if listing is not None or self._listable.get(prefix):
            self._listable[prefix] = True
            self._etags.update(listing or {})
            return {name: "not found" for name in filenames if self.key(split, name) not in self._etags}
        if prefix not in self._listable:
            self._listable[prefix] = False
            log.warning("s3://%s/%s: listing is not allowed (no s3:ListBucket). Each of the %d key(s) is checked "
                        "with a HEAD request of its own instead of one listing per 1,000 keys; a missing key and "
                        "a forbidden one both answer 403 and are reported as 'missing or not permitted'; the "
                        "disk cache is matched by the ETag each HEAD returns.", self.bucket, prefix, len(filenames))
        found = dict(zip(filenames, self.pool.map(lambda name: self._head(self.key(split, name)), filenames)))
        missing = {name: reason for name, reason in found.items() if reason}
        if filenames and len(missing) == len(filenames) and all(r == MISSING_OR_DENIED for r in missing.values()):
            raise S3AccessError(f"s3://{self.bucket}/{prefix}: every one of {len(filenames)} object(s) answered 403: "
                                "the credentials may lack s3:GetObject here (or no key exists)")
        return missing

    def _head(self, key: str) -> str | None:
        """Why ``key`` cannot be read (None: it can, and its ETag is noted for the disk cache)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as err:
            if error_code(err) in MISSING_CODES:
                return "not found"
            if error_code(err) in DENIED_CODES:
                return MISSING_OR_DENIED
            raise access_error(err, f"s3://{self.bucket}/{key}", self.endpoint) or S3TransientError(
                f"s3://{self.bucket}/{key}: HEAD failed after {self.max_attempts} attempts ({error_code(err)})") from None
        except BotoCoreError as err:
            raise access_error(err, f"s3://{self.bucket}/{key}", self.endpoint) or S3TransientError(
                f"s3://{self.bucket}/{key}: HEAD failed after {self.max_attempts} attempts ({type(err).__name__})") from None
        if response.get("ETag"):
            self._etags[key] = response["ETag"].strip('"')
        return None

    def _get(self, split: str, filename: str) -> bytes | str:
        """One object's bytes (from the disk cache if it holds this ETag, else from S3, checked), or
        why the object is bad; raises when it is only unavailable."""
        key = self.key(split, filename)
        etag = self._etags.get(key)
        if self.cache and etag:
            blob = self.cache.get(self.bucket, key, etag)
            if blob is not None:
                return blob
        result = self._reader.read(self.client, key, etag)
        if isinstance(result, str):
            return result
        blob, etag = result
        if self.cache and etag:
            self.cache.put(self.bucket, key, etag, blob)
        return blob

    def fetch(self, split: str, filenames: list[str]) -> list[bytes | str]:
        pool = self.pool
        futures = [self._pending.pop((split, name), None) or pool.submit(self._get, split, name)
                   for name in filenames]
        self._read_ahead(split, filenames)
        return [future.result() for future in futures]

    def read_ahead_within(self, split: str, filenames: list[str]) -> None:
        if self._pid != os.getpid():  # a forked copy: the parent's read-ahead is not here
            self._reset()
        self._order = {split: list(filenames)}
        self.__dict__.pop("_position", None)
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()

    def _read_ahead(self, split: str, filenames: list[str]) -> None:
        """Start fetching the split's next images (in records order) while this batch is used.

        Only after a batch read in records order (feature extraction, evaluation): after a random
        P×K training batch, the next images in file order are not what comes next."""
        order = getattr(self, "_order", {}).get(split)
        if not self.prefetch or not order or not filenames:
            return
        if not hasattr(self, "_position"):
            self._position = {s: {name: i for i, name in enumerate(names)} for s, names in self._order.items()}
        positions = [self._position[split].get(name) for name in filenames]
        if None in positions or positions != list(range(positions[0], positions[0] + len(positions))):
            return
        start = positions[-1]
        for name in order[start + 1:start + 1 + self.prefetch]:
            if (split, name) not in self._pending:
                self._pending[(split, name)] = self.pool.submit(self._get, split, name)
        while len(self._pending) > 2 * self.prefetch:  # random access: the oldest will not be used
            self._pending.pop(next(iter(self._pending))).cancel()
