"""On-disk cache of frozen-backbone features, shared by epochs, runs and the jobs of a sweep.

Layout: ``<root>/<config digest>/`` holds ``key.json`` (what the features depend on: model and
revision, prompt, text mode, pixel budget, pooling, layer, dtype, ...) and append-only shards
``shard-*.safetensors``. Each shard holds ``keys`` (uint8 [N, 32], the SHA-256 of an image's decoded
pixels and its record text) and ``features`` (float32 [N, dim]), with the format version, config
digest and a SHA-256 of both tensors in its metadata. Shards are written to a temp file and renamed,
so a killed run leaves complete shards (reused) and at most a temp file (ignored, later removed).
A shard that fails to parse, has the wrong shape or digest, or does not match its checksum is
deleted on load and its features are recomputed. Concurrent jobs may compute the same features
twice; duplicates are identical and harmless.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path

import torch

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"
STALE_TMP_SECONDS = 3600


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def item_key(image, text: str | None) -> bytes:
    """SHA-256 of an RGB image's pixels and size plus the record text that goes beside it."""
    image = image.convert("RGB")
    h = hashlib.sha256()
    h.update(f"rgb {image.width}x{image.height}\0".encode())
    h.update(image.tobytes())
    h.update(b"\0text\0" + (text or "").encode("utf-8"))
    return h.digest()


class FeatureCache:
    """Features by item key for one backbone configuration. `get` then `put`; `flush` writes a shard."""

    def __init__(self, root: str | os.PathLike, fingerprint: dict, dim: int, flush_every: int = 1024):
        self.fingerprint = fingerprint
        self.key_digest = digest(fingerprint)
        self.dim = dim
        self.flush_every = flush_every
        self.dir = Path(root) / self.key_digest[:24]
        self._index: dict[bytes, torch.Tensor] | None = None
        self._pending: list[tuple[bytes, torch.Tensor]] = []

    def __len__(self) -> int:
        return len(self._load())

    def _load(self) -> dict[bytes, torch.Tensor]:
        if self._index is not None:
            return self._index
        self._index = {}
        if not self.dir.is_dir():
            return self._index
        now = time.time()
        for tmp in self.dir.glob(".*.tmp"):
            try:
                if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                    tmp.unlink()
            except OSError:
                pass
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            try:
                keys, features = self._read_shard(shard)
            except FileNotFoundError:
                continue  # removed by another job between listing and reading
            except Exception as err:  # noqa: BLE001 - any unreadable shard is rebuilt
                log.warning("feature cache: dropping bad shard %s (%s); its features will be recomputed",
                            shard, err)
                shard.unlink(missing_ok=True)
                continue
            for k, row in zip(keys.numpy(), features):
                self._index[k.tobytes()] = row
        return self._index

    def _read_shard(self, shard: Path) -> tuple[torch.Tensor, torch.Tensor]:
        from safetensors import safe_open

        with safe_open(shard, framework="pt") as fh:
            meta = fh.metadata() or {}
            names = set(fh.keys())
            if names != {"keys", "features"}:
                raise ValueError(f"tensors {sorted(names)}")
            keys, features = fh.get_tensor("keys"), fh.get_tensor("features")
        if meta.get("format") != FORMAT_VERSION or meta.get("key") != self.key_digest:
            raise ValueError(f"format {meta.get('format')!r} / key {meta.get('key')!r} do not match")
        if keys.dtype != torch.uint8 or keys.ndim != 2 or keys.shape[1] != 32:
            raise ValueError(f"keys {keys.dtype} {tuple(keys.shape)}")
        if features.dtype != torch.float32 or features.shape != (len(keys), self.dim):
            raise ValueError(f"features {features.dtype} {tuple(features.shape)}, expected [{len(keys)}, {self.dim}]")
        if meta.get("sha256") != _checksum(keys, features):
            raise ValueError("checksum mismatch")
        return keys, features

    def get(self, keys: list[bytes]) -> list[torch.Tensor | None]:
        index = self._load()
        return [index.get(k) for k in keys]

    def put(self, keys: list[bytes], features: torch.Tensor) -> None:
        """Remember features [N, dim] for `keys`; a shard is written every `flush_every` items."""
        features = features.detach().to("cpu", torch.float32)
        if features.shape != (len(keys), self.dim):
            raise ValueError(f"features {tuple(features.shape)} do not fit {len(keys)} keys of dim {self.dim}")
        index = self._load()
        for k, row in zip(keys, features):
            if k not in index:
                index[k] = row.clone()
                self._pending.append((k, index[k]))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write pending features as one shard (temp file, then rename)."""
        if not self._pending:
            return
        from safetensors.torch import save_file

        keys = torch.frombuffer(bytearray(b"".join(k for k, _ in self._pending)), dtype=torch.uint8).view(-1, 32)
        features = torch.stack([row for _, row in self._pending]).contiguous()
        self._pending.clear()
        name = f"shard-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:12]}.safetensors"
        tmp = self.dir / f".{name}.tmp"
        metadata = {"format": FORMAT_VERSION, "key": self.key_digest, "sha256": _checksum(keys, features),
                    "count": str(len(keys))}
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            key_file = self.dir / "key.json"
            if not key_file.exists():
                _atomic_write(key_file, (json.dumps(self.fingerprint, indent=2, sort_keys=True) + "\n").encode())
            save_file({"keys": keys, "features": features}, tmp, metadata=metadata)
            os.replace(tmp, self.dir / name)
        except OSError as err:  # e.g. a checkpoint's cache path on another machine: features stay in memory
            log.warning("feature cache: cannot write %s (%s); continuing without saving these features", self.dir, err)
            try:
                tmp.unlink()
            except OSError:
                pass

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.safetensors"))


def _checksum(keys: torch.Tensor, features: torch.Tensor) -> str:
    h = hashlib.sha256(keys.contiguous().numpy().tobytes())
    h.update(features.contiguous().numpy().tobytes())
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)

