"""On-disk cache of frozen-backbone features, shared by epochs, runs and the jobs of a sweep.

Layout: ``<root>/<config digest>/`` holds ``key.json`` (what the features depend on: model and
revision, prompt, text mode, pixel budget, pooling, layer, dtype, ...) and append-only shards
``shard-*.safetensors``. Each shard holds ``keys`` (uint8 [N, 32], the SHA-256 of an image's decoded
pixels and its record text) and ``features`` (float32 [N, dim]), with the format version, config
digest and a SHA-256 of both tensors in its metadata. Shards are written to a temp file and renamed,
so a killed run leaves complete shards (reused) and at most a temp file (ignored, later removed).
Concurrent jobs may compute the same features twice; duplicates are identical and harmless.

A record whose image the data source can identify without reading it (`DataSource.identity`: a
file's path, size and times, an S3 object's ETag) also gets an alias, the SHA-256 of that identity
and its text, mapped to its item key in ``alias-*.safetensors`` (``aliases`` and ``keys``, uint8 [N,
32], checksummed like a shard). A later run finds such a feature without fetching, decoding or
hashing the image, and when all of a run's features are found so, its backbone is never loaded.

Memory: a configuration's cache may hold every dataset ever embedded with that model, so only the
keys of its shards are read up front (32 bytes an item); a feature row is read from its shard
(safetensors slices) when a run asks for it. A shard is checked against its checksum, streamed,
the first time a row of it is read; one that fails to parse, has the wrong shape or digest, or
does not match its checksum is deleted and its features are recomputed. Directories are created
0700 and shards 0600 (the features describe people's photos); a shard read refreshes its mtime,
which ``python -m charfeat.cache prune`` reads.
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

from charfeat.caches import private_dir, touch, write_private

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"
STALE_TMP_SECONDS = 3600
ROWS_PER_READ = 4096  # rows hashed at once when a shard is verified: bounds the memory it takes


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def item_key(image, text: str | None) -> bytes:
    """SHA-256 of an RGB image's pixels and size plus the record text that goes beside it."""
    image = image if image.mode == "RGB" else image.convert("RGB")  # no 36 MB copy of an RGB photo
    h = hashlib.sha256()
    h.update(f"rgb {image.width}x{image.height}\0".encode())
    h.update(image.tobytes())
    h.update(b"\0text\0" + (text or "").encode("utf-8"))
    return h.digest()


def view_key(key: bytes, augment, view: int) -> bytes:
    """SHA-256 of an item key, an augmentation's settings (`Augment.fingerprint`) and a view index:
    the key of that augmented view's feature."""
    return hashlib.sha256(b"view\0" + key + digest(augment.fingerprint()).encode() + f"\0{view}".encode()).digest()


def alias_key(identity: str, text: str | None) -> bytes:
    """SHA-256 of what identifies an image's bytes without reading them and the record text beside it."""
    return hashlib.sha256(b"identity\0" + identity.encode("utf-8") + b"\0text\0" + (text or "").encode("utf-8")).digest()


class FeatureCache:
    """Features by item key for one backbone configuration. `get` then `put`; `flush` writes a shard."""

    def __init__(self, root: str | os.PathLike, fingerprint: dict, dim: int, flush_every: int = 1024):
        self.fingerprint = fingerprint
        self.key_digest = digest(fingerprint)
        self.dim = dim
        self.flush_every = flush_every
        self.dir = Path(root) / self.key_digest[:24]
        self._index: dict[bytes, tuple[Path, int]] | None = None  # key -> (shard, row); no features
        self._verified: set[Path] = set()
        self._pending: dict[bytes, torch.Tensor] = {}  # put, not yet in a shard
        self._aliases: dict[bytes, bytes] | None = None  # alias -> item key
        self._pending_aliases: dict[bytes, bytes] = {}
        self.writable = True  # until a write fails: then features stay in memory for this run

    def __len__(self) -> int:
        return len(self._load()) + len(self._pending)

    def _load(self) -> dict[bytes, tuple[Path, int]]:
        """The index of every shard's keys (their features stay on disk)."""
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
        for shard in self.shards():
            try:
                keys = self._read_keys(shard)
            except FileNotFoundError:
                continue  # removed by another job between listing and reading
            except Exception as err:  # noqa: BLE001 - any unreadable shard is rebuilt
                self._drop(shard, err)
                continue
            for row, k in enumerate(keys.numpy()):
                self._index.setdefault(k.tobytes(), (shard, row))
        return self._index

    def _read_keys(self, shard: Path) -> torch.Tensor:
        """A shard's keys, after checking its metadata and both tensors' types and shapes."""
        from safetensors import safe_open

        with safe_open(shard, framework="pt") as fh:
            meta = fh.metadata() or {}
            names = set(fh.keys())
            if names != {"keys", "features"}:
                raise ValueError(f"tensors {sorted(names)}")
            keys, features = fh.get_tensor("keys"), fh.get_slice("features")
            dtype, shape = features.get_dtype(), tuple(features.get_shape())
        if meta.get("format") != FORMAT_VERSION or meta.get("key") != self.key_digest:
            raise ValueError(f"format {meta.get('format')!r} / key {meta.get('key')!r} do not match")
        if keys.dtype != torch.uint8 or keys.ndim != 2 or keys.shape[1] != 32:
            raise ValueError(f"keys {keys.dtype} {tuple(keys.shape)}")
        if dtype != "F32" or shape != (len(keys), self.dim):
            raise ValueError(f"features {dtype} {shape}, expected [{len(keys)}, {self.dim}]")
        return keys

    def _verify(self, shard: Path) -> None:
        """Check the shard's checksum, streaming its rows (once per run)."""
        from safetensors import safe_open

        if shard in self._verified:
            return
        with safe_open(shard, framework="pt") as fh:
            expected = (fh.metadata() or {}).get("sha256")
            h = hashlib.sha256(fh.get_tensor("keys").contiguous().numpy().tobytes())
            features = fh.get_slice("features")
            for start in range(0, features.get_shape()[0], ROWS_PER_READ):
                h.update(features[start:start + ROWS_PER_READ].contiguous().numpy().tobytes())
        if h.hexdigest() != expected:
            raise ValueError("checksum mismatch")
        self._verified.add(shard)

    def _drop(self, shard: Path, err: Exception) -> None:
        log.warning("feature cache: dropping bad shard %s (%s); its features will be recomputed", shard, err)
        shard.unlink(missing_ok=True)
        if self._index is not None:
            self._index = {k: where for k, where in self._index.items() if where[0] != shard}

    def _read_rows(self, shard: Path, rows: list[int]) -> dict[int, torch.Tensor] | None:
        """{row: feature} of one shard, read in runs of consecutive rows; None if the shard is bad."""
        from safetensors import safe_open

        try:
            self._verify(shard)
            out: dict[int, torch.Tensor] = {}
            with safe_open(shard, framework="pt") as fh:
                features = fh.get_slice("features")
                ordered = sorted(set(rows))
                run_start = 0
                for i in range(1, len(ordered) + 1):
                    if i == len(ordered) or ordered[i] != ordered[i - 1] + 1:
                        first, last = ordered[run_start], ordered[i - 1]
                        block = features[first:last + 1]
                        out.update({first + j: block[j].clone() for j in range(len(block))})
                        run_start = i
        except FileNotFoundError:
            return None  # removed by another job: recomputed
        except Exception as err:  # noqa: BLE001 - a shard that cannot be read is rebuilt
            self._drop(shard, err)
            return None
        touch(shard)
        return out

    def get(self, keys: list[bytes]) -> list[torch.Tensor | None]:
        """The cached feature of each key (None where there is none), reading only these rows."""
        index = self._load()
        out: list[torch.Tensor | None] = [self._pending.get(k) for k in keys]
        wanted: dict[Path, list[tuple[int, int]]] = {}
        for i, k in enumerate(keys):
            if out[i] is None and k in index:
                shard, row = index[k]
                wanted.setdefault(shard, []).append((i, row))
        for shard, items in wanted.items():
            rows = self._read_rows(shard, [row for _, row in items])
            for i, row in items if rows is not None else ():
                out[i] = rows[row]
        return out

    def resolve(self, aliases: list[bytes | None]) -> list[bytes | None]:
        """The item key each alias stands for (None where unknown, or for a None alias)."""
        index = self._load_aliases()
        return [None if a is None else self._pending_aliases.get(a) or index.get(a) for a in aliases]

    def add_aliases(self, aliases: list[bytes | None], keys: list[bytes]) -> None:
        """Remember that each alias stands for the item key beside it (written with the next `flush`)."""
        index = self._load_aliases()
        for alias, key in zip(aliases, keys):
            if alias is not None and index.get(alias) != key:
                self._pending_aliases[alias] = key

    def _load_aliases(self) -> dict[bytes, bytes]:
        if self._aliases is not None:
            return self._aliases
        from safetensors import safe_open

        self._aliases = {}
        for path in sorted(self.dir.glob("alias-*.safetensors")) if self.dir.is_dir() else ():
            try:
                with safe_open(path, framework="pt") as fh:
                    meta = fh.metadata() or {}
                    aliases, keys = fh.get_tensor("aliases"), fh.get_tensor("keys")
                if meta.get("format") != FORMAT_VERSION or meta.get("key") != self.key_digest:
                    raise ValueError(f"format {meta.get('format')!r} / key {meta.get('key')!r} do not match")
                if aliases.shape != keys.shape or keys.ndim != 2 or keys.shape[1] != 32 or \
                        _checksum(aliases, keys) != meta.get("sha256"):
                    raise ValueError("shape or checksum mismatch")
            except FileNotFoundError:
                continue
            except Exception as err:  # noqa: BLE001 - an unreadable alias file only costs reading the images again
                log.warning("feature cache: dropping bad alias file %s (%s)", path, err)
                path.unlink(missing_ok=True)
                continue
            touch(path)
            self._aliases.update(zip((a.tobytes() for a in aliases.numpy()), (k.tobytes() for k in keys.numpy())))
        return self._aliases

    def put(self, keys: list[bytes], features: torch.Tensor) -> None:
        """Remember features [N, dim] for `keys`; a shard is written every `flush_every` items."""
        features = features.detach().to("cpu", torch.float32)
        if features.shape != (len(keys), self.dim):
            raise ValueError(f"features {tuple(features.shape)} do not fit {len(keys)} keys of dim {self.dim}")
        index = self._load()
        for k, row in zip(keys, features):
            if k not in index and k not in self._pending:
                self._pending[k] = row.clone()
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write pending features as one shard and pending aliases as one alias file (each a temp file,
        then renamed); they are then read from there."""
        if self._pending and self.writable:
            pending = list(self._pending.items())
            keys = _stacked_keys(k for k, _ in pending)
            shard = self._write("shard", keys=keys, features=torch.stack([row for _, row in pending]).contiguous())
            if shard is not None:
                self._pending.clear()
                self._verified.add(shard)  # its checksum was computed from these very rows
                for row, (k, _) in enumerate(pending):
                    self._index[k] = (shard, row)
        if self._pending_aliases and self.writable and not self._pending:  # never an alias to an unwritten feature
            aliases = list(self._pending_aliases.items())
            if self._write("alias", aliases=_stacked_keys(a for a, _ in aliases),
                           keys=_stacked_keys(k for _, k in aliases)) is not None:
                self._aliases.update(aliases)
                self._pending_aliases.clear()

    def _write(self, kind: str, **tensors: torch.Tensor) -> Path | None:
        """``<kind>-<time>-<random>.safetensors`` with its checksum; None (and no more writes) if it fails."""
        from safetensors.torch import save_file

        name = f"{kind}-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:12]}.safetensors"
        tmp = self.dir / f".{name}.tmp"
        first, second = tensors.values()
        metadata = {"format": FORMAT_VERSION, "key": self.key_digest, "sha256": _checksum(first, second),
                    "count": str(len(first))}
        try:
            private_dir(self.dir)
            key_file = self.dir / "key.json"
            if not key_file.exists():
                write_private(key_file, (json.dumps(self.fingerprint, indent=2, sort_keys=True) + "\n").encode())
            save_file(tensors, tmp, metadata=metadata)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.dir / name)
        except OSError as err:  # e.g. a checkpoint's cache path on another machine: features stay in memory
            log.warning("feature cache: cannot write %s (%s); this run keeps its features in memory", self.dir, err)
            self.writable = False
            try:
                tmp.unlink()
            except OSError:
                pass
            return None
        return self.dir / name

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.safetensors"))


def _stacked_keys(keys) -> torch.Tensor:
    return torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).view(-1, 32)


def _checksum(keys: torch.Tensor, features: torch.Tensor) -> str:
    h = hashlib.sha256(keys.contiguous().numpy().tobytes())
    h.update(features.contiguous().numpy().tobytes())
    return h.hexdigest()
