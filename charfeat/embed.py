"""Embed one split with a saved model, for search or analysis elsewhere.

    python -m charfeat.embed checkpoint=outputs/train/runs/<run>/checkpoints/last.pt [split=val]
    python -m charfeat.embed checkpoint=... data=local data.root=/path/to/dataset split=train

Writes to the run's output dir: ``embeddings.npy`` (float32 [N, D], unit length, so a dot product
is the cosine similarity), ``items.jsonl`` (one ``{"id", "filename", "label"}`` per row, in the
same order) and ``index.json`` (the checkpoint, split, count and dimension). That dir is the
``index`` of `charfeat.search`.
"""

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from charfeat.config import register_configs
from charfeat.inference import embed_split, write_index
from charfeat.training.distributed import pick_device

log = logging.getLogger(__name__)


def embed(cfg: DictConfig) -> Path:
    """Embed ``cfg.split`` with ``cfg.checkpoint``; write the index files; return the output dir."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    split = embed_split(cfg.checkpoint, cfg.data, cfg.split, cfg.batch_size, pick_device(cfg.device))
    split.data.close()  # a source may hold threads and connections (S3)
    meta = {"checkpoint": str(Path(cfg.checkpoint).expanduser().resolve()), "split": cfg.split,
            "count": len(split.records), "dim": int(split.embeddings.shape[1])}
    write_index(output_dir, split.records, split.embeddings, meta)
    log.info("%d %s embeddings of dim %d written to %s", meta["count"], cfg.split, meta["dim"], output_dir)
    return output_dir


register_configs()


@hydra.main(version_base="1.3", config_path="pkg://charfeat.conf", config_name="embed")
def main(cfg: DictConfig) -> None:
    embed(cfg)


if __name__ == "__main__":
    main()
