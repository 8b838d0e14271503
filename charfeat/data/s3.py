"""Images in S3 (or MinIO, R2, any S3 endpoint): ``s3://<bucket>/<prefix><filename>``.

Objects of a batch are fetched concurrently; botocore retries transient failures. The client is
created lazily, per process, because boto3 clients survive neither pickling nor fork.
Credentials come only from boto3's standard chain and are never stored on this object.
"""

import os
from concurrent.futures import ThreadPoolExecutor

from charfeat.data.source import DataSource, ImageLoadError


class S3Data(DataSource):
    def __init__(self, bucket: str, root: str = ".", train_jsonl: str = "train.jsonl",
                 val_jsonl: str = "val.jsonl", label_field: str = "fashion_style", prefix: str = "",
                 val_prefix: str | None = None, region: str | None = "us-east-1",
                 endpoint_url: str | None = None, profile: str | None = None, max_attempts: int = 5,
                 max_workers: int = 16):
        super().__init__(root, train_jsonl, val_jsonl, label_field)
        self.bucket = bucket
        self.prefixes = {"train": prefix, "val": prefix if val_prefix is None else val_prefix}
        self.region, self.endpoint_url, self.profile = region, endpoint_url, profile
        self.max_attempts, self.max_workers = max_attempts, max_workers
        self._client = None
        self._client_pid = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_client"] = state["_client_pid"] = None
        return state

    @property
    def client(self):
        if self._client is None or self._client_pid != os.getpid():
            import boto3
            from botocore.config import Config

            session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
            self._client = session.client(
                "s3", endpoint_url=self.endpoint_url,
                config=Config(retries={"mode": "adaptive", "max_attempts": self.max_attempts},
                              max_pool_connections=self.max_workers, connect_timeout=5, read_timeout=30),
            )
            self._client_pid = os.getpid()
        return self._client

    def key(self, split: str, filename: str) -> str:
        return self.prefixes[split] + filename

    def location(self, split: str, filename: str) -> str:
        return f"s3://{self.bucket}/{self.key(split, filename)}"

    def _get(self, key: str) -> bytes | str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "?")
            if code in ("NoSuchKey", "404"):
                return "missing"
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "NoSuchBucket"):
                raise ImageLoadError(f"s3://{self.bucket}/{key}: {code}: {err}") from None
            return f"{code}: {err}"
        except BotoCoreError as err:
            raise ImageLoadError(f"s3://{self.bucket}/{key}: {err}") from None

    def fetch_bytes(self, split: str, filenames: list[str]) -> list[bytes]:
        keys = [self.key(split, name) for name in filenames]
        self.client  # create once, before the threads share it
        with ThreadPoolExecutor(max_workers=min(self.max_workers, max(1, len(keys)))) as pool:
            results = list(pool.map(self._get, keys))
        failed = [f"s3://{self.bucket}/{key}: {result}" for key, result in zip(keys, results)
                  if isinstance(result, str)]
        if failed:
            raise ImageLoadError(f"{len(failed)} object(s) could not be fetched:\n  " + "\n  ".join(failed))
        return results
