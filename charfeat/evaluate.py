"""Evaluate a saved model on one split: retrieval metrics, the chance baseline and plots.

    python -m charfeat.evaluate checkpoint=outputs/train/runs/<run>/checkpoints/last.pt
    python -m charfeat.evaluate checkpoint=... split=train
    python -m charfeat.evaluate checkpoint=... data=local data.root=/path/to/dataset

Without a ``data`` option the data config saved in the checkpoint is used, so the command scores
the model on the data it was trained on. The output dir gets ``metrics.json``:
``{"model": {...}, "chance": {...}}``, with the same metrics (and the same per-class and
confusion entries under "model") as the "trained" and "chance" entries of a training run's
metrics.json; and ``plots/tsne.png`` and ``plots/neighbours.png`` unless ``plots=false``.
"""

import logging
from collections import Counter
from pathlib import Path

import hydra
import torch
from hydra.utils import get_class
from omegaconf import DictConfig

from charfeat.config import register_configs
from charfeat.data.labels import encode_labels
from charfeat.evaluation.metrics import chance_metrics, retrieval_metrics
from charfeat.evaluation.results import format_table, with_class_names, write_metrics
from charfeat.inference import embed_split
from charfeat.training.distributed import pick_device

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, dict]:
    """Score the checkpoint on ``cfg.split``; write metrics.json (and plots); return {"model", "chance"}."""
    if cfg.data is not None and not get_class(cfg.data._target_).labelled:
        raise ValueError(f"data: {cfg.data._target_} has no labels to score; embed it with charfeat.embed")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    split = embed_split(cfg.checkpoint, cfg.data, cfg.split, cfg.batch_size, pick_device(cfg.device))
    label_map, class_names = split.label_map, list(split.label_map)
    labels = torch.tensor(encode_labels(split.records, label_map, str(split.data.jsonl_path(cfg.split))))
    majority = Counter(r.label for r in split.data.records("train")).most_common(1)[0][0]
    if majority not in label_map:
        raise ValueError(f"the data's majority training class {majority!r} is not among the model's classes "
                         f"{class_names}: no chance baseline can be scored")
    results = {
        "model": with_class_names(retrieval_metrics(split.embeddings, labels, len(label_map)), class_names),
        "chance": chance_metrics(labels, label_map[majority]),
    }
    write_metrics(output_dir / "metrics.json", results)
    if cfg.plots:
        from charfeat.evaluation.plots import save_plots

        save_plots(output_dir / "plots", split.embeddings, labels, class_names, split.data, cfg.split, split.records)
    split.data.close()  # a source may hold threads and connections (S3)
    log.info("results (%d %s images, %s):\n%s", len(labels), cfg.split, cfg.checkpoint, format_table(results))
    return results


register_configs()


@hydra.main(version_base="1.3", config_path="pkg://charfeat.conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
