"""The items of an embedded split most similar in style to one image.

    python -m charfeat.search checkpoint=<.../last.pt> index=<charfeat.embed output dir> query=photo.jpg k=5
    python -m charfeat.search ... query=s3://bucket/key [s3.endpoint_url=...]

The query image goes through the checkpoint's backbone and head; the ``index`` dir's embeddings are
ranked by cosine similarity with faiss (exact inner product, ``IndexFlatIP``) when it is installed,
else with torch. Prints one line per hit (rank, id, label, cosine score) and writes them to
``results.json`` in the run's output dir.
"""

import json
import logging
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from charfeat.checkpoint import load_model
from charfeat.config import register_configs
from charfeat.data.images import decode
from charfeat.embed import EMBEDDINGS, ITEMS, META
from charfeat.training.distributed import pick_device

log = logging.getLogger(__name__)


def load_index(index_dir: str | Path) -> tuple[np.ndarray, list[dict], dict]:
    """An embed output dir -> (embeddings float32 [N, D], items [N], meta), checked to agree."""
    index_dir = Path(index_dir).expanduser()
    missing = [name for name in (EMBEDDINGS, ITEMS) if not (index_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"index {index_dir} lacks {missing}: pass an output dir of charfeat.embed")
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
    """Exact inner-product top-k of one query [D] against index [N, D]: (scores [k'], rows [k']), k' = min(k, N)."""
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


def read_query(query: str, s3: DictConfig) -> bytes:
    """The query image's bytes: a local path, or ``s3://bucket/key`` through boto3's credential chain."""
    if query.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        from charfeat.data.sources.s3 import make_client

        bucket, _, key = query[len("s3://"):].partition("/")
        try:
            return make_client(s3.region, s3.endpoint_url, s3.profile).get_object(Bucket=bucket, Key=key)["Body"].read()
        except (BotoCoreError, ClientError) as err:
            raise FileNotFoundError(f"query image {query} could not be fetched: {err}") from None
    path = Path(query).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"query image {path} does not exist")
    return path.read_bytes()


@torch.no_grad()
def embed_image(backbone: torch.nn.Module, head: torch.nn.Module, blob: bytes) -> torch.Tensor:
    """One encoded image -> its embedding [D] on the CPU, decoded as the data sources decode images."""
    if getattr(backbone, "text", "none") != "none":
        log.warning("backbone.text=%s: the index was embedded with each record's text, the query has none",
                    backbone.text)
    image = decode(blob)
    return head(backbone(**backbone.preprocess([image]))).float().cpu()[0]


def search(cfg: DictConfig) -> list[dict]:
    """The ``cfg.k`` nearest items to ``cfg.query``: [{"rank", "id", "filename", "label", "score"}]."""
    embeddings, items, meta = load_index(cfg.index)
    checkpoint = Path(cfg.checkpoint).expanduser().resolve()
    if meta.get("checkpoint") and meta["checkpoint"] != str(checkpoint):
        log.warning("index %s was embedded with %s, the query with %s", cfg.index, meta["checkpoint"], checkpoint)
    backbone, head, _, _ = load_model(checkpoint, pick_device(cfg.device))
    query = embed_image(backbone, head, read_query(cfg.query, cfg.s3)).numpy()
    if query.shape[0] != embeddings.shape[1]:
        raise ValueError(f"the model's embeddings have dim {query.shape[0]}, the index's {embeddings.shape[1]}")
    scores, rows = top_k(embeddings, query, cfg.k)
    hits = [{"rank": rank, "id": items[row]["id"], "filename": items[row]["filename"],
             "label": items[row]["label"], "score": float(score)}
            for rank, (score, row) in enumerate(zip(scores.tolist(), rows.tolist()), start=1)]
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps({"query": str(cfg.query), "hits": hits}, indent=2) + "\n")
    return hits


def format_hits(hits: list[dict]) -> str:
    rows = [f"{'rank':>4}  {'id':<24} {'label':<20} {'cosine':>7}"]
    rows += [f"{h['rank']:>4}  {str(h['id']):<24} {str(h['label']):<20} {h['score']:>7.4f}" for h in hits]
    return "\n".join(rows)


register_configs()


@hydra.main(version_base="1.3", config_path="pkg://charfeat.conf", config_name="search")
def main(cfg: DictConfig) -> None:
    print(format_hits(search(cfg)))


if __name__ == "__main__":
    main()
