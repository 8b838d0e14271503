"""Embed one split with a saved model, for search or analysis elsewhere.

    python -m charfeat.embed checkpoint=outputs/train/runs/<run>/checkpoints/last.pt [split=val]
    python -m charfeat.embed checkpoint=... data=local data.root=/path/to/dataset split=train

Writes to the run's output dir: ``embeddings.npy`` (float32 [N, D], unit length, so a dot product
is the cosine similarity), ``items.jsonl`` (one ``{"id", "filename", "label"}`` per row, in the
same order) and ``index.json`` (the checkpoint, split, count and dimension). That dir is the
``index`` of `charfeat.search`.
"""

import json
import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from charfeat.config import register_configs
from charfeat.evaluate import embed_split

log = logging.getLogger(__name__)

EMBEDDINGS, ITEMS, META = "embeddings.npy", "items.jsonl", "index.json"


def embed(cfg: DictConfig) -> Path:
    """Embed ``cfg.split`` with ``cfg.checkpoint``; write the three files; return the output dir."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _, records, embeddings, _ = embed_split(cfg)
    np.save(output_dir / EMBEDDINGS, embeddings.numpy().astype(np.float32))
    with open(output_dir / ITEMS, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps({"id": record.id, "filename": record.filename, "label": record.label or None}) + "\n")
    meta = {"checkpoint": str(Path(cfg.checkpoint).expanduser().resolve()), "split": cfg.split,
            "count": len(records), "dim": int(embeddings.shape[1])}
    (output_dir / META).write_text(json.dumps(meta, indent=2) + "\n")
    log.info("%d %s embeddings of dim %d written to %s", len(records), cfg.split, meta["dim"], output_dir)
    return output_dir


register_configs()


@hydra.main(version_base="1.3", config_path="pkg://charfeat.conf", config_name="embed")
def main(cfg: DictConfig) -> None:
    embed(cfg)


if __name__ == "__main__":
    main()
