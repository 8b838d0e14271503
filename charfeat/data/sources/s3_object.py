"""One S3 object's bytes: one retry budget, one deadline, and the strongest body check the object allows.

Budget: at most ``data.max_attempts`` HTTP requests per object in all. botocore's retries of a
failed request and charfeat's re-fetches of a body that arrived broken draw from the same count
(a handler on botocore's ``before-send`` event counts every request and stops the next one once
the count or ``data.object_deadline_s`` is spent), so retries never multiply. An object that
still fails then is unavailable, not bad: `S3TransientError`, and the run stops naming it.

What is verified, per kind of object (the README's table says the same):

- A full-object checksum (``x-amz-checksum-*`` without a ``-N`` part count: every single-part
  upload by a current AWS SDK, multipart uploads with ``ChecksumType=FULL_OBJECT``): botocore
  validates it while the body is read (``ChecksumMode=ENABLED``); a mismatch is a broken body.
  CRC32, SHA-1 and SHA-256 always; CRC32C and CRC64NVME when ``awscrt`` is installed.
- Otherwise, an ETag of 32 hex digits on an object that is neither multipart (``...-N``) nor
  SSE-KMS/SSE-C encrypted is taken as the body's MD5 and compared. Some stores (MinIO with
  encryption or ``--no-compat``) send such ETags that are not MD5s: a body that mismatches is
  fetched again, and when the second copy is byte-identical the store's ETags are known not to be
  MD5s (logged once); from then on its objects without a checksum are checked by length only.
- Otherwise (multipart without a full-object checksum, SSE-KMS, SSE-C): the length only.

Whatever passes is then decoded (``data.verify_images``), which a random corruption rarely survives.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time

from charfeat.data.sources.s3_errors import (DENIED_CODES, MISSING_CODES, S3TransientError, access_error,
                                             error_code)

log = logging.getLogger(__name__)
MD5_ETAG = re.compile(r"[0-9a-f]{32}")
ALWAYS_VALIDATED = ("CRC32", "SHA1", "SHA256")  # botocore's own; the others need awscrt
CHECKSUMS = ("CRC64NVME", "CRC32C", "CRC32", "SHA256", "SHA1")


class BudgetSpent(Exception):
    """Raised inside botocore (before a request is sent) when the object's budget is spent."""


class BrokenBody(Exception):
    """A body that arrived but is not the object: cut short, or failing its checksum or MD5."""


class Budget:
    """Requests left and the deadline of one object's fetch."""

    def __init__(self, attempts: int, seconds: float):
        self.attempts, self.left, self.seconds = attempts, attempts, seconds
        self.deadline = time.monotonic() + seconds
        self.mismatched: str | None = None  # SHA-256 of a body whose MD5 did not match its ETag

    def spend(self) -> None:
        if self.left <= 0:
            raise BudgetSpent(f"{self.attempts} request(s) (data.max_attempts) spent")
        if time.monotonic() >= self.deadline:
            raise BudgetSpent(f"data.object_deadline_s={self.seconds:g} passed")
        self.left -= 1

    def pause(self) -> None:
        """Back off before re-fetching a broken body (botocore backs off its own retries)."""
        done = self.attempts - self.left
        time.sleep(max(0.0, min(0.05 * 2 ** done, 1.0, self.deadline - time.monotonic())))


def validated_checksum(response: dict) -> str | None:
    """The full-object checksum botocore validated while this response's body was read, if any."""
    from botocore.compat import HAS_CRT

    for algorithm in CHECKSUMS:
        value = response.get(f"Checksum{algorithm}")
        if value and "-" not in value and (HAS_CRT or algorithm in ALWAYS_VALIDATED):
            return algorithm
    return None


def md5_etag(response: dict, listed_etag: str | None) -> str | None:
    """The ETag when it is the body's MD5 on AWS's rules: 32 hex, not multipart, not SSE-KMS/SSE-C.
    A response without an ETag is compared with the listing's (or HEAD's)."""
    etag = (response.get("ETag") or listed_etag or "").strip('"')
    encrypted = str(response.get("ServerSideEncryption", "")).startswith("aws:kms") or "SSECustomerAlgorithm" in response
    return etag if MD5_ETAG.fullmatch(etag) and not encrypted else None


class ObjectReader:
    """GETs objects of ``bucket`` within their budgets; one per process, shared by its threads.

    ``install(client)`` hooks the budget into a client; ``read`` is thread-safe."""

    def __init__(self, bucket: str, max_attempts: int, deadline_s: float, endpoint: str):
        self.bucket, self.max_attempts, self.deadline_s, self.endpoint = bucket, max_attempts, deadline_s, endpoint
        self.etags_are_md5 = True  # until the store shows otherwise
        self._local = threading.local()
        self._lock = threading.Lock()

    def install(self, client) -> None:
        client.meta.events.register("before-send.s3.GetObject", self._before_send)

    def _before_send(self, request, **_) -> None:
        budget = getattr(self._local, "budget", None)
        if budget is not None:
            budget.spend()

    def read(self, client, key: str, listed_etag: str | None) -> tuple[bytes, str | None] | str:
        """(body, ETag) of ``s3://bucket/key``, checked; or why the object is bad (missing, not
        permitted). Raises S3TransientError when the budget is spent, S3AccessError when no object
        of the store can be read."""
        from botocore.exceptions import BotoCoreError, ClientError

        budget = self._local.budget = Budget(self.max_attempts, self.deadline_s)
        problem = "no attempt made"
        try:
            while True:
                try:
                    return self._read_once(client, key, listed_etag, budget)
                except ClientError as err:
                    if error_code(err) in MISSING_CODES:
                        return "not found"
                    if error_code(err) in DENIED_CODES:
                        return "missing or not permitted (403 AccessDenied)"
                    self._raise_fatal(err, key)
                    problem = f"{error_code(err)} (HTTP {err.response.get('ResponseMetadata', {}).get('HTTPStatusCode')})"
                except BotoCoreError as err:
                    self._raise_fatal(err, key)
                    problem = f"{type(err).__name__}"
                except BrokenBody as err:
                    problem = str(err)
                budget.pause()
        except BudgetSpent as spent:
            raise S3TransientError(
                f"s3://{self.bucket}/{key}: still failing after its retry budget ({spent}; last: {problem}). "
                "A transient failure is not a bad image, so it is not skipped: run again later, or raise "
                "data.max_attempts / data.object_deadline_s") from None
        finally:
            self._local.budget = None

    def _raise_fatal(self, err: Exception, key: str) -> None:
        from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError, ProfileNotFound

        if isinstance(err, (ClientError, NoCredentialsError, PartialCredentialsError, ProfileNotFound)):
            fatal = access_error(err, f"s3://{self.bucket}/{key}", self.endpoint)
            if fatal:
                raise fatal from None

    def _read_once(self, client, key: str, listed_etag: str | None, budget: Budget) -> tuple[bytes, str | None]:
        response = client.get_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        body = response["Body"].read()  # botocore raises here on a cut-off body or a checksum mismatch
        etag = (response.get("ETag") or listed_etag or "").strip('"') or None
        if len(body) != response.get("ContentLength", len(body)):
            raise BrokenBody(f"body cut off at {len(body)} of {response['ContentLength']} bytes")
        if validated_checksum(response):
            return body, etag
        expected = md5_etag(response, listed_etag) if self.etags_are_md5 else None
        if expected and hashlib.md5(body).hexdigest() != expected:
            self._md5_mismatch(key, body, budget)
        return body, etag

    def _md5_mismatch(self, key: str, body: bytes, budget: Budget) -> None:
        """A second byte-identical body means the store's ETags are not MD5s; else the body broke."""
        digest = hashlib.sha256(body).hexdigest()
        if budget.mismatched != digest:
            budget.mismatched = digest
            raise BrokenBody("body does not match its ETag (MD5)")
        with self._lock:
            if self.etags_are_md5:
                self.etags_are_md5 = False
                log.warning("%s: ETags are not MD5s of the objects (s3://%s/%s came twice, byte-identical, with "
                            "another ETag; e.g. MinIO with encryption or --no-compat): objects without a checksum "
                            "are now checked by length only", self.endpoint, self.bucket, key)
