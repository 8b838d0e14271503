"""The items of an embedded data set most similar in style to one image.

    python -m charfeat.search checkpoint=<.../last.pt> index=<charfeat.embed output dir> query=photo.jpg k=5
    python -m charfeat.search ... query=s3://bucket/key [s3.endpoint_url=...]

The query image goes through the checkpoint's backbone and head; the ``index`` dir's embeddings are
ranked by cosine similarity with faiss (exact inner product, ``IndexFlatIP``) when it is installed,
else with torch. Prints one line per hit (rank, cosine score, label, the image's path or s3:// URL),
writes them to ``results.json`` and draws ``results.png``: the query beside its hits, as the
neighbour grid of training draws a row. Hits in S3 are read with the same ``s3.*`` settings.
"""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from charfeat.cli import hydra_main
from charfeat.config import register_configs
from charfeat.errors import ConfigError

log = logging.getLogger(__name__)
HIT_FRAME = (150, 150, 150)  # the query has no label, so a hit is neither right nor wrong


def search(cfg: DictConfig) -> list[dict]:
    """The ``cfg.k`` nearest items to ``cfg.query``: [{"rank", "id", "filename", "label", "location", "score"}]."""
    from charfeat.inference import embed_image, load_model, read_image_bytes, read_index, top_k
    from charfeat.training.distributed import pick_device

    embeddings, items, meta = read_index(cfg.index)
    checkpoint = Path(cfg.checkpoint).expanduser().resolve()
    if meta.get("checkpoint") and meta["checkpoint"] != str(checkpoint):
        log.warning("index %s was embedded with %s, the query with %s", cfg.index, meta["checkpoint"], checkpoint)
    backbone, head, _, _ = load_model(checkpoint, pick_device(cfg.device))
    query_bytes = read_image_bytes(cfg.query, cfg.s3.region, cfg.s3.endpoint_url, cfg.s3.profile)
    query = embed_image(backbone, head, query_bytes).numpy()
    if query.shape[0] != embeddings.shape[1]:
        raise ConfigError(f"checkpoint={checkpoint} embeds to dim {query.shape[0]} but index={cfg.index} holds dim "
                          f"{embeddings.shape[1]}: pass the checkpoint the index was embedded with")
    scores, rows = top_k(embeddings, query, cfg.k)
    hits = [{"rank": rank, "id": items[row]["id"], "filename": items[row]["filename"], "label": items[row]["label"],
             "location": items[row].get("location", items[row]["filename"]), "score": float(score)}
            for rank, (score, row) in enumerate(zip(scores.tolist(), rows.tolist()), start=1)]
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps({"query": str(cfg.query), "hits": hits}, indent=2) + "\n")
    draw_results(cfg, query_bytes, hits, len(items), output_dir / "results.png")
    return hits


def draw_results(cfg: DictConfig, query_bytes: bytes, hits: list[dict], count: int, path: Path) -> None:
    """``results.png``: the query, then each hit with its rank, score and label. A hit image that
    cannot be read leaves the picture out (a warning names it), never a stand-in image."""
    from charfeat.data.images import decode
    from charfeat.evaluation.plots import COLOURS, tile_row
    from charfeat.inference import read_image_bytes

    images = [decode(query_bytes)]
    for hit in hits:
        try:
            images.append(decode(read_image_bytes(hit["location"], cfg.s3.region, cfg.s3.endpoint_url,
                                                  cfg.s3.profile)))
        except Exception as err:  # the hits are printed and in results.json either way
            log.warning("results.png not drawn: hit %d (%s) could not be read: %s", hit["rank"], hit["location"], err)
            return
    captions = [["query", Path(str(cfg.query)).name]]
    captions += [[f"{hit['rank']}. {hit['score']:.3f}", str(hit["label"] or Path(hit["filename"]).name)]
                 for hit in hits]
    colours = [COLOURS["query"], *[HIT_FRAME] * len(hits)]
    tile_row(images, colours, captions, f"{Path(str(cfg.query)).name}: top {len(hits)} of {count} by cosine", path)


def format_hits(hits: list[dict]) -> str:
    rows = [f"{'rank':>4}  {'cosine':>6}  {'label':<20} location"]
    rows += [f"{h['rank']:>4}  {h['score']:>6.4f}  {str(h['label']):<20} {h['location']}" for h in hits]
    return "\n".join(rows)


register_configs()


@hydra_main("search")
def main(cfg: DictConfig) -> None:
    print(format_hits(search(cfg)))


if __name__ == "__main__":
    main()
