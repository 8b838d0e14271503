"""Images in S3 (or MinIO, R2, Ceph, any S3 endpoint): ``s3://<bucket>/<prefix><filename>``.

Speed: a batch's objects are fetched concurrently, the next ``prefetch`` images of the split
are fetched ahead of the model, and a disk cache keyed by ETag serves later epochs and runs.
Trust: one listing per prefix finds every missing key before training starts; botocore retries
transient failures and a broken or mismatched body (MD5 vs ETag) is fetched again; whatever
still fails is an error naming every object (or, under ``skip``, reported by id) and never a
placeholder. Credentials come only from boto3's standard chain and are never stored here.
The client and thread pool are created lazily in each process: they survive neither pickling
nor fork.
"""

import hashlib
import logging
import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlparse

from charfeat.config import RetryMode
from charfeat.data.sources.s3_object_cache import S3ObjectCache
from charfeat.data.sources.base import DataSource, ImageLoadError

log = logging.getLogger(__name__)
MISSING_CODES = ("NoSuchKey", "404", "NotFound")
ACCESS_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken",
                "NoSuchBucket", "AllAccessDisabled", "403")
MD5 = re.compile(r"[0-9a-f]{32}")


class S3AccessError(ImageLoadError):
    """The bucket cannot be used at all: bad credentials, no permission, no bucket, no endpoint."""


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


def _encrypted(response: dict) -> bool:
    """SSE-KMS and SSE-C objects have ETags that are not the MD5 of their bytes."""
    return response.get("ServerSideEncryption") == "aws:kms" or "SSECustomerAlgorithm" in response


class S3Data(DataSource):
    """Records from local JSONL, images from S3; the arguments are the ``data=s3`` config group's keys
    (``charfeat.config.S3DataConfig``)."""

    def __init__(self, bucket: str, root: str, train_jsonl: str, val_jsonl: str | None, prefix: str,
                 val_prefix: str | None, region: str | None, endpoint_url: str | None, profile: str | None,
                 retry_mode: RetryMode, max_attempts: int, connect_timeout: float, read_timeout: float,
                 max_workers: int, prefetch: int, cache_dir: str | None, **options):
        super().__init__(root, train_jsonl, val_jsonl, **options)
        if endpoint_url and (urlparse(endpoint_url).username or urlparse(endpoint_url).password):
            raise ValueError("data.endpoint_url must not carry credentials: use the environment or data.profile")
        if max_attempts < 1 or max_workers < 1 or prefetch < 0:
            raise ValueError("data.max_attempts and data.max_workers must be >= 1, data.prefetch >= 0")
        self.bucket = bucket
        self.prefixes = {"train": prefix, "val": prefix if val_prefix is None else val_prefix}
        self.region, self.endpoint_url, self.profile = region, endpoint_url, profile
        self.retry_mode, self.max_attempts = retry_mode, max_attempts
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.max_workers, self.prefetch = max_workers, prefetch
        self.cache = S3ObjectCache(cache_dir) if cache_dir else None
        self._listings: dict[str, dict[str, str] | None] = {}  # prefix -> {key: etag}, None if not listable
        self._reset()

    def _reset(self) -> None:
        self._session = self._client = self._pool = None
        self._pending: dict[tuple[str, str], Future] = {}
        self._pid = os.getpid()

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_session=None, _client=None, _pool=None, _pending={}, _pid=None)
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
        return self._client

    @property
    def pool(self) -> ThreadPoolExecutor:
        self.client  # noqa: B018 -- resets after a fork, and is created once before threads share it
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="charfeat-s3")
        return self._pool

    def map(self, fn, items: list) -> list:
        return list(self.pool.map(fn, items))

    def key(self, split: str, filename: str) -> str:
        return self.prefixes[split] + filename

    def location(self, split: str, filename: str) -> str:
        return f"s3://{self.bucket}/{self.key(split, filename)}"

    def _fatal(self, err: Exception, what: str) -> S3AccessError | None:
        """A clear error for failures that no retry fixes; None for per-object ones."""
        from botocore.exceptions import (ClientError, ConnectTimeoutError, EndpointConnectionError,
                                         NoCredentialsError, PartialCredentialsError, ProfileNotFound)

        if isinstance(err, (NoCredentialsError, PartialCredentialsError, ProfileNotFound)):
            return S3AccessError(f"{what}: no usable AWS credentials ({type(err).__name__}); set "
                                 "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, data.profile or an instance role")
        if isinstance(err, (EndpointConnectionError, ConnectTimeoutError)):
            return S3AccessError(f"{what}: cannot reach the S3 endpoint "
                                 f"{self.endpoint_url or 'for region ' + str(self.region)} ({type(err).__name__})")
        if isinstance(err, ClientError):
            code = err.response.get("Error", {}).get("Code", "?")
            if code in ACCESS_CODES:
                return S3AccessError(f"{what}: S3 refused the request ({code}); check the credentials from "
                                     "boto3's chain (environment, data.profile, instance role), the bucket "
                                     "name and its permissions")
        return None

    def _listing(self, split: str) -> dict[str, str] | None:
        """{key: etag} under the split's prefix, listed once; None where listing is not allowed."""
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = self.prefixes[split]
        if prefix in self._listings:
            return self._listings[prefix]
        where = f"s3://{self.bucket}/{prefix}"
        self.client  # noqa: B018 -- resets the session after a fork
        try:  # two attempts, so a wrong endpoint or credentials fail in seconds, not after backoff
            self._make_client(2).list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        except (BotoCoreError, ClientError) as err:
            fatal = self._fatal(err, where)
            if fatal and not (isinstance(err, ClientError) and err.response["Error"]["Code"] == "AccessDenied"):
                raise fatal from None
        listing: dict[str, str] | None = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                listing.update({obj["Key"]: obj["ETag"].strip('"') for obj in page.get("Contents", [])})
        except (BotoCoreError, ClientError) as err:
            fatal = self._fatal(err, where)
            if not (isinstance(err, ClientError) and err.response["Error"]["Code"] == "AccessDenied"):
                raise fatal or S3AccessError(f"{where}: listing failed ({type(err).__name__})") from None
            log.warning("%s: listing not allowed; checking objects one by one", where)
            listing = None
        self._listings[prefix] = listing
        return listing

    def missing(self, split: str, filenames: list[str]) -> list[str]:
        listing = self._listing(split)
        if listing is not None:
            return [name for name in filenames if self.key(split, name) not in listing]
        found = list(self.pool.map(lambda name: self._exists(self.key(split, name)), filenames))
        return [name for name, ok in zip(filenames, found) if not ok]

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in MISSING_CODES:
                return False
            raise self._fatal(err, f"s3://{self.bucket}/{key}") or err from None
        except BotoCoreError as err:
            raise self._fatal(err, f"s3://{self.bucket}/{key}") or err from None

    def _get(self, split: str, filename: str) -> bytes | str:
        """One object's bytes (cache, else S3, verified), or why it could not be had."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key(split, filename)
        etag = (self._listings.get(self.prefixes[split]) or {}).get(key)
        if self.cache and etag:
            blob = self.cache.get(self.bucket, key, etag)
            if blob is not None:
                return blob
        problem = "?"
        for attempt in range(self.max_attempts):  # botocore retries requests; this also retries bodies
            if attempt:
                time.sleep(min(1.0, 0.05 * 2 ** attempt))
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
                blob = response["Body"].read()
            except ClientError as err:
                code = err.response.get("Error", {}).get("Code", "?")
                if code in MISSING_CODES:
                    return "not found"
                fatal = self._fatal(err, f"s3://{self.bucket}/{key}")
                if fatal:
                    raise fatal from None
                return f"{code} after {self.max_attempts} attempts"
            except BotoCoreError as err:
                fatal = self._fatal(err, f"s3://{self.bucket}/{key}")
                if fatal:
                    raise fatal from None
                problem = type(err).__name__
                continue
            got = response.get("ETag", "").strip('"')
            if len(blob) != response.get("ContentLength", len(blob)):
                problem = "truncated body"
            elif (MD5.fullmatch(got) and not _encrypted(response)
                  and hashlib.md5(blob).hexdigest() != got):
                problem = "body does not match its ETag"
            else:
                if self.cache and got:
                    self.cache.put(self.bucket, key, got, blob)
                return blob
        return f"failed after {self.max_attempts} attempts ({problem})"

    def fetch(self, split: str, filenames: list[str]) -> list[bytes | str]:
        pool = self.pool
        futures = [self._pending.pop((split, name), None) or pool.submit(self._get, split, name)
                   for name in filenames]
        self._read_ahead(split, filenames)
        return [future.result() for future in futures]

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
        while len(self._pending) > 2 * self.prefetch:  # random access: drop the oldest (it still warms the cache)
            self._pending.pop(next(iter(self._pending)))
