"""Embed a data set with a saved model, for search or analysis elsewhere.

    python -m charfeat.embed checkpoint=outputs/train/runs/<run>/checkpoints/last.pt [split=train|val|all]
    python -m charfeat.embed checkpoint=... data=local data.root=/path/to/dataset split=train

``split=all`` (the default) embeds the training split, then the validation split. Writes to the
run's output dir: ``embeddings.npy`` (float32 [N, D], unit length, so a dot product is the cosine
similarity), ``items.jsonl`` (one ``{"id", "filename", "label", "split", "location"}`` per row, in
the same order; ``location`` is the image's absolute path or s3:// URL) and ``index.json`` (the
checkpoint, split, count and dimension). That dir is the ``index`` of `charfeat.search`.
"""

import logging
from pathlib import Path

from omegaconf import DictConfig

from charfeat.cli import hydra_main
from charfeat.config import register_configs

log = logging.getLogger(__name__)


def embed(cfg: DictConfig) -> Path:
    """Embed ``cfg.split`` with ``cfg.checkpoint``; write the index files; return the output dir."""
    from charfeat.inference import embed_split, write_index
    from charfeat.training.distributed import pick_device

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    embedded = embed_split(cfg.checkpoint, cfg.data, cfg.split, cfg.batch_size, pick_device(cfg.device))
    items = [{"id": record.id, "filename": record.filename, "label": record.label or None, "split": split,
              "location": absolute(embedded.data.location(split, record.filename))}
             for record, split in zip(embedded.records, embedded.splits)]
    embedded.data.close()  # a source may hold threads and connections (S3)
    meta = {"checkpoint": str(Path(cfg.checkpoint).expanduser().resolve()), "split": str(cfg.split),
            "count": len(items), "dim": int(embedded.embeddings.shape[1])}
    write_index(output_dir, items, embedded.embeddings, meta)
    log.info("%d embeddings (split %s) of dim %d written to %s", meta["count"], cfg.split, meta["dim"], output_dir)
    return output_dir


def absolute(location: str) -> str:
    """An s3:// URL as is; a path made absolute, so the index can be searched from any directory."""
    return location if location.startswith("s3://") else str(Path(location).expanduser().resolve())


register_configs()


@hydra_main("embed")
def main(cfg: DictConfig) -> None:
    embed(cfg)


if __name__ == "__main__":
    main()
