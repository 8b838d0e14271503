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

import json
import logging
from collections import Counter
from pathlib import Path

import hydra
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from charfeat.checkpoint import load_model
from charfeat.config import register_configs
from charfeat.data.labels import encode_labels
from charfeat.data.records import Record
from charfeat.data.sources.base import DataSource
from charfeat.training.distributed import pick_device
from charfeat.features.extract import extract_features
from charfeat.evaluation.metrics import chance_metrics, retrieval_metrics
from charfeat.train import format_table, with_class_names

log = logging.getLogger(__name__)


@torch.no_grad()
def embed_records(backbone: torch.nn.Module, head: torch.nn.Module, data: DataSource, split: str,
                  records: list[Record], batch_size: int, device: torch.device) -> torch.Tensor:
    """Embeddings [N, out_dim] (unit length, on the CPU) of ``records``, in order; both modules in eval mode."""
    backbone.eval()
    head.eval()
    return extract_features(backbone, data, split, records, batch_size, device, then=head)


def embed_split(cfg: DictConfig) -> tuple[DataSource, list[Record], torch.Tensor, dict[str, int]]:
    """Load ``cfg.checkpoint``, read ``cfg.split`` of the data and embed it: (data, records, embeddings, label_map).

    The data comes from ``cfg.data`` when an option was picked, else from the checkpoint's config.
    """
    device = pick_device(cfg.device)
    backbone, head, label_map, config = load_model(cfg.checkpoint, device)
    data_cfg = cfg.data if cfg.data is not None else config["data"]
    log.info("data: %s (%s), split %s", data_cfg["_target_"],
             "from the command line" if cfg.data is not None else "saved in the checkpoint", cfg.split)
    data = instantiate(data_cfg)
    records = data.records(cfg.split)
    batch_size = cfg.batch_size or config["trainer"]["embed_batch_size"]
    return data, records, embed_records(backbone, head, data, cfg.split, records, batch_size, device), label_map


def evaluate(cfg: DictConfig) -> dict[str, dict]:
    """Score the checkpoint on ``cfg.split``; write metrics.json (and plots); return {"model", "chance"}."""
    from charfeat.evaluation.plots import save_plots

    if cfg.data is not None and not get_class(cfg.data._target_).labelled:
        raise ValueError(f"data: {cfg.data._target_} has no labels to score; embed it with charfeat.embed")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data, records, embeddings, label_map = embed_split(cfg)
    labels = torch.tensor(encode_labels(records, label_map, str(data.jsonl_path(cfg.split))))
    majority = Counter(r.label for r in data.records("train")).most_common(1)[0][0]
    if majority not in label_map:
        raise ValueError(f"the data's majority training class {majority!r} is not among the model's classes "
                         f"{list(label_map)}: no chance baseline can be scored")
    results = {
        "model": with_class_names(retrieval_metrics(embeddings, labels, len(label_map)), list(label_map)),
        "chance": chance_metrics(labels, label_map[majority]),
    }
    (output_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    if cfg.plots:
        save_plots(output_dir / "plots", embeddings, labels, list(label_map), data, cfg.split, records)
    log.info("results (%d %s images, %s):\n%s", len(labels), cfg.split, cfg.checkpoint, format_table(results))
    return results


register_configs()


@hydra.main(version_base="1.3", config_path="pkg://charfeat.conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
