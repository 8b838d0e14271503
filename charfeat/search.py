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
from omegaconf import DictConfig

from charfeat.config import register_configs
from charfeat.inference import embed_image, load_model, read_image_bytes, read_index, top_k
from charfeat.training.distributed import pick_device

log = logging.getLogger(__name__)


def search(cfg: DictConfig) -> list[dict]:
    """The ``cfg.k`` nearest items to ``cfg.query``: [{"rank", "id", "filename", "label", "score"}]."""
    embeddings, items, meta = read_index(cfg.index)
    checkpoint = Path(cfg.checkpoint).expanduser().resolve()
    if meta.get("checkpoint") and meta["checkpoint"] != str(checkpoint):
        log.warning("index %s was embedded with %s, the query with %s", cfg.index, meta["checkpoint"], checkpoint)
    backbone, head, _, _ = load_model(checkpoint, pick_device(cfg.device))
    blob = read_image_bytes(cfg.query, cfg.s3.region, cfg.s3.endpoint_url, cfg.s3.profile)
    query = embed_image(backbone, head, blob).numpy()
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
