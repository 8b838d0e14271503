"""Using a trained model: rebuild it from a checkpoint, embed records or one image, write and read an
index of embeddings, and rank an index against a query.

A checkpoint holds only what training changed; the backbone is built again from the config saved
in it, so a frozen one is loaded from its `name_or_path` exactly as in training (a hub id, or a
local directory that must still be there).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn

from charfeat.config import TextMode, with_schema_defaults
from charfeat.data.images import decode
from charfeat.data.records import Record
from charfeat.data.sources.base import DataSource
from charfeat.errors import UserError
from charfeat.features.extract import FeatureExtractor
from charfeat.training.checkpoint import read_checkpoint

log = logging.getLogger(__name__)

EMBEDDINGS, ITEMS, META = "embeddings.npy", "items.jsonl", "index.json"


class InputNotFound(UserError, FileNotFoundError):
    """An index dir or query image named on the command line that is missing or cannot be fetched."""


def load_model(path: str | Path, device: str | torch.device = "cpu",
               checkpoint: dict | None = None) -> tuple[nn.Module, nn.Module, dict, dict]:
    """checkpoint path -> (backbone, head, label_map, config), both modules in eval mode on ``device``.

    The checkpoint is read as plain data (nothing in it can run code) and its config may build only
    allowed classes (``charfeat.training.checkpoint``). The backbone and head are instantiated from
    that ``config`` (the head with ``in_dim = backbone.feature_dim``, as in training); the head's
    state is loaded strictly, and the saved backbone parameters must be exactly the backbone's
    trainable ones. ``checkpoint``: the file's contents when the caller has read it already.
    """
    checkpoint = checkpoint if checkpoint is not None else read_checkpoint(path)
    config = checkpoint["config"]
    log.info("checkpoint %s: backbone %s (%s)", path, config["backbone"]["name_or_path"],
             config["backbone"].get("train", "frozen"))
    backbone = instantiate(with_schema_defaults(config, "backbone"))  # keys added since it was saved: defaults
    head = instantiate(config["head"], _partial_=False, in_dim=backbone.feature_dim)
    head.load_state_dict(checkpoint["head"])
    try:
        backbone.load_trainable_state_dict(checkpoint["backbone_trainable"])
    except KeyError as err:
        raise KeyError(f"{path}: {err.args[0]}") from None
    return backbone.to(device).eval(), head.to(device).eval(), dict(checkpoint["label_map"]), config


@torch.no_grad()
def embed_records(backbone: nn.Module, head: nn.Module, data: DataSource, split: str, records: list[Record],
                  batch_size: int, device: torch.device) -> torch.Tensor:
    """Embeddings [N, out_dim] (unit length, on the CPU) of ``records``, in order; both modules in eval mode."""
    backbone.eval()
    head.eval()
    return FeatureExtractor(backbone, batch_size, device).extract(data, split, records, then=head)


@torch.no_grad()
def embed_features(head: nn.Module, features: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Embeddings [N, out_dim] (on the CPU) of backbone features [N, hidden] already extracted; head in eval mode."""
    head.eval()
    return torch.cat([head(chunk.to(device)).float().cpu() for chunk in features.split(batch_size)])


@dataclass
class EmbeddedSplit:
    """One split (or both) of a data source, embedded by a saved model."""

    data: DataSource
    records: list[Record]
    embeddings: torch.Tensor
    label_map: dict[str, int]
    splits: list[str]  # each record's split: what reads its image (data.location, data.load_images)


def embed_split(checkpoint: str | Path, data_cfg, split: str, batch_size: int | None,
                device: torch.device) -> EmbeddedSplit:
    """Load ``checkpoint``, read ``split`` of the data (``all``: train, then val) and embed it.

    The data comes from ``data_cfg`` when given, else from the checkpoint's config; the batch
    size, when None, is the checkpoint's ``trainer.embed_batch_size``. A source without metadata
    (a bare folder or prefix) has no splits: each is every image, so ``all`` embeds them once.
    """
    backbone, head, label_map, config = load_model(checkpoint, device)
    log.info("data: %s (%s), split %s", (data_cfg or config["data"])["_target_"],
             "from the command line" if data_cfg is not None else "saved in the checkpoint", split)
    data_cfg = data_cfg if data_cfg is not None else with_schema_defaults(config, "data")
    data = instantiate(data_cfg)
    splits = [split] if split != "all" else ["train", "val"] if data.labelled else ["train"]
    batch_size = batch_size or config["trainer"]["embed_batch_size"]
    parts = [(name, data.records(name)) for name in splits]
    embeddings = torch.cat([embed_records(backbone, head, data, name, records, batch_size, device)
                            for name, records in parts])
    return EmbeddedSplit(data, [r for _, records in parts for r in records], embeddings, label_map,
                         [name for name, records in parts for _ in records])


def write_index(output_dir: Path, items: list[dict], embeddings: torch.Tensor, meta: dict) -> None:
    """``embeddings.npy`` (float32 [N, D]), ``items.jsonl`` (one JSON object per row) and ``index.json``."""
    np.save(output_dir / EMBEDDINGS, embeddings.numpy().astype(np.float32))
    with open(output_dir / ITEMS, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(item) + "\n" for item in items)
    (output_dir / META).write_text(json.dumps(meta, indent=2) + "\n")


def read_index(index_dir: str | Path) -> tuple[np.ndarray, list[dict], dict]:
    """An embed output dir -> (embeddings float32 [N, D], items [N], meta), checked to agree."""
    index_dir = Path(index_dir).expanduser()
    missing = [name for name in (EMBEDDINGS, ITEMS) if not (index_dir / name).is_file()]
    if missing:
        raise InputNotFound(f"index={index_dir} lacks {missing}: pass an output dir of charfeat.embed")
    embeddings = np.ascontiguousarray(np.load(index_dir / EMBEDDINGS), dtype=np.float32)
    lines = (index_dir / ITEMS).read_text(encoding="utf-8").splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    if embeddings.ndim != 2 or len(embeddings) != len(items):
        raise ValueError(f"index {index_dir}: {EMBEDDINGS} has shape {embeddings.shape} but {ITEMS} has "
                         f"{len(items)} items")
    meta_path = index_dir / META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return embeddings, items, meta


def top_k(index: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k of one query [D] against index [N, D]: (scores [k'], rows [k']), k' = min(k, N).

    faiss (``IndexFlatIP``) when it is installed, else torch."""
    k = min(k, len(index))
    query = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
    try:
        import faiss
    except ImportError:
        scores, rows = torch.from_numpy(index @ query[0]).topk(k)
        return scores.numpy(), rows.numpy()
    flat = faiss.IndexFlatIP(index.shape[1])
    flat.add(index)
    scores, rows = flat.search(query, k)
    return scores[0], rows[0]


def read_image_bytes(location: str, region: str | None = None, endpoint_url: str | None = None,
                     profile: str | None = None) -> bytes:
    """An image's encoded bytes: a local path, or ``s3://bucket/key`` through boto3's credential chain."""
    if location.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        from charfeat.data.sources.s3 import make_client

        bucket, _, key = location[len("s3://"):].partition("/")
        try:
            return make_client(region, endpoint_url, profile).get_object(Bucket=bucket, Key=key)["Body"].read()
        except (BotoCoreError, ClientError) as err:
            raise InputNotFound(f"image {location} could not be fetched: {err}") from None
    path = Path(location).expanduser()
    if not path.is_file():
        raise InputNotFound(f"image {path} does not exist")
    return path.read_bytes()


@torch.no_grad()
def embed_image(backbone: nn.Module, head: nn.Module, blob: bytes) -> torch.Tensor:
    """One encoded image -> its embedding [D] on the CPU, decoded as the data sources decode images."""
    if backbone.text != TextMode.none:
        log.warning("backbone.text=%s: the index was embedded with each record's text, the query has none",
                    backbone.text)
    return head(backbone(**backbone.preprocess([decode(blob)]))).float().cpu()[0]
