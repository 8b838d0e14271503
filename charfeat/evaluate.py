"""Evaluate a saved model on one split: its metrics next to the raw backbone's and chance, with
95 % intervals, suspect labels, plots and a report to open in a browser.

    python -m charfeat.evaluate checkpoint=outputs/train/runs/<run>/checkpoints/last.pt
    python -m charfeat.evaluate checkpoint=... split=train
    python -m charfeat.evaluate checkpoint=... data=local data.root=/path/to/dataset

Without a ``data`` option the data config saved in the checkpoint is used, so the command scores
the model on the data it was trained on. The output dir gets ``metrics.json``
(``{"model", "backbone", "chance"}`` and each one's ``_ci95``, the same metrics as a training
run's "trained", "backbone" and "chance"), ``per_query.npz``, ``suspects.jsonl``,
``plots/*.png`` (unless ``plots=false``) and ``report.html`` (charfeat.evaluation.final).
"""

import logging
from pathlib import Path

from omegaconf import DictConfig

from charfeat.cli import hydra_main
from charfeat.config import register_configs

log = logging.getLogger(__name__)


def embed_rows(checkpoint: str, saved: dict, data, split: str, records: list, batch_size: int | None,
               device: "torch.device") -> tuple[dict[str, "torch.Tensor"], dict[str, int]]:
    """({"model": embeddings, "backbone": the backbone's features}, label map) of ``records``.

    A frozen backbone is the raw one: its features (through the feature cache) feed the head. A
    trained one is not, so the raw backbone is built again from the checkpoint's config for its row."""
    from hydra.utils import instantiate

    from charfeat.config import with_schema_defaults
    from charfeat.features.extract import FeatureExtractor
    from charfeat.inference import embed_features, load_model

    backbone, head, label_map, config = load_model(checkpoint, device, saved)
    batch_size = batch_size or config["trainer"]["embed_batch_size"]
    if backbone.frozen:
        features = FeatureExtractor(backbone, batch_size, device).extract(data, split, records)
        return {"model": embed_features(head, features, batch_size, device), "backbone": features}, label_map
    model = FeatureExtractor(backbone, batch_size, device).extract(data, split, records, then=head)
    del backbone
    log.info("backbone row: the raw %s, without its trained weights", config["backbone"]["name_or_path"])
    raw = instantiate(with_schema_defaults(config, "backbone")).to(device).eval()
    return {"model": model, "backbone": FeatureExtractor(raw, batch_size, device).extract(data, split, records)}, \
        label_map


def evaluate(cfg: DictConfig) -> dict:
    """Score the checkpoint on ``cfg.split``, write every output (see the module's doc), return the results."""
    import torch  # here, not at the top: --help answers without loading torch
    from hydra.utils import get_class, instantiate

    from charfeat.config import with_schema_defaults
    from charfeat.errors import ConfigError
    from charfeat.data.labels import encode_labels
    from charfeat.evaluation.final import SplitEmbeddings, evaluate_split
    from charfeat.evaluation.results import format_table
    from charfeat.training.checkpoint import read_checkpoint
    from charfeat.training.distributed import pick_device

    saved = read_checkpoint(cfg.checkpoint)
    data_cfg = cfg.data if cfg.data is not None else with_schema_defaults(saved["config"], "data")
    if not get_class(data_cfg._target_).labelled:
        raise ConfigError(f"data: {data_cfg._target_} has no labels to score; embed it with charfeat.embed")
    log.info("data: %s (%s), split %s", data_cfg._target_,
             "from the command line" if cfg.data is not None else "saved in the checkpoint", cfg.split)
    with instantiate(data_cfg) as data:  # a source may hold threads and connections (S3)
        records = data.records(cfg.split)
        rows, label_map = embed_rows(cfg.checkpoint, saved, data, cfg.split, records, cfg.batch_size,
                                     pick_device(cfg.device))
        labels = torch.tensor(encode_labels(records, label_map, str(data.jsonl_path(cfg.split))))
        split = SplitEmbeddings(cfg.split, records, labels, list(label_map), data, rows,
                                subject=f"{Path(cfg.checkpoint).name} (epoch {saved.get('epoch', '?')})")
        results = evaluate_split(Path(cfg.paths.output_dir), split, cfg.eval, cfg.plots)
    log.info("results of %s:\n%s", cfg.checkpoint, format_table(results, f"{cfg.split}: {len(labels)} images"))
    return results


register_configs()


@hydra_main("evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
