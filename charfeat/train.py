"""Train and evaluate a style-embedding model from a composed config.

    python -m charfeat.train sampler.p=8 loss.margin=0.3
    python -m charfeat.train -m loss.margin=0.1,0.3

With a frozen backbone, features are computed once per split and the head trains on them;
otherwise images go through the backbone at every step. Every run writes metrics.json,
label_mapping.json and checkpoints/last.pt (the trained parts only) under paths.output_dir.
"""

import json
import logging
import os
import random
from collections import Counter
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from charfeat.config import register_configs
from charfeat.data.labels import build_label_map, encode_labels, save_label_map
from charfeat.features import batched, encode_images, extract_features
from charfeat.metrics import SCALAR_METRICS, chance_metrics, retrieval_metrics
from charfeat.tracking import NoTracker

log = logging.getLogger(__name__)
logging.getLogger("PML").setLevel(logging.WARNING)  # one line per k-NN call otherwise


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def multirun_group() -> str | None:
    """The sweep dir's name, so the jobs of one multirun share a W&B group."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode.name != "MULTIRUN":
        return None
    return Path(hydra_cfg.sweep.dir).name


def start_tracker(cfg: DictConfig, output_dir: Path):
    if cfg.logger is None:
        return NoTracker()
    log.info("tracker: %s (mode %s)", cfg.logger._target_, cfg.logger.mode)
    # partial: the resolved config holds _target_ keys that instantiate would try to build
    make_tracker = instantiate(cfg.logger, _partial_=True, output_dir=str(output_dir),
                               group=cfg.logger.group or multirun_group())
    return make_tracker(run_config=OmegaConf.to_container(cfg, resolve=True))


def format_table(results: dict[str, dict]) -> str:
    """The end-of-run table: one row per model (trained, untrained, chance), scalar metrics only."""
    header = {"precision_at_1": "P@1", "recall_at_5": "R@5", "recall_at_10": "R@10",
              "mean_average_precision_at_r": "MAP@R", "r_precision": "R-prec"}
    rows = [f"{'model':<10}" + "".join(f"{header[name]:>9}" for name in SCALAR_METRICS)]
    for model, metrics in results.items():
        rows.append(f"{model:<10}" + "".join(f"{metrics[name]:>9.4f}" for name in SCALAR_METRICS))
    return "\n".join(rows)


def scalars(metrics: dict, prefix: str) -> dict[str, float]:
    return {f"{prefix}{name}": metrics[name] for name in SCALAR_METRICS}


def with_class_names(metrics: dict, class_names: list[str]) -> dict:
    """Per-class results keyed by class name, and the confusion matrix with its row/column names."""
    named = dict(metrics)
    named["per_class_precision_at_1"] = {class_names[c]: v for c, v in metrics["per_class_precision_at_1"].items()}
    named["nn_confusion"] = {"classes": class_names, "counts": metrics["nn_confusion"]}
    return named


def save_checkpoint(path: Path, **state) -> None:
    """torch.save to a temp file, then rename: a crash never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Build everything from ``cfg``, train, evaluate; return {"trained", "untrained", "chance"}."""
    if cfg.trainer.epochs < 1:
        raise ValueError(f"trainer.epochs must be >= 1, got {cfg.trainer.epochs}")
    seed_everything(cfg.trainer.seed)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    log.info("data: %s", cfg.data._target_)
    data = instantiate(cfg.data)
    records = {split: data.records(split) for split in ("train", "val")}
    label_map = build_label_map(records["train"])
    labels = {split: torch.tensor(encode_labels(records[split], label_map, str(data.jsonl_path(split))))
              for split in records}
    log.info("classes: %d; images: %d train, %d val", len(label_map), len(labels["train"]), len(labels["val"]))
    sampler = instantiate(cfg.sampler)(labels=labels["train"].tolist(), seed=cfg.trainer.seed,
                                       class_names=list(label_map))
    loss_fn = instantiate(cfg.loss)
    save_label_map(label_map, output_dir / "label_mapping.json")

    device = pick_device(cfg.trainer.device)
    log.info("backbone: %s (%s)", cfg.backbone.name_or_path, cfg.backbone.train)
    backbone = instantiate(cfg.backbone).to(device)
    head = instantiate(cfg.head)(in_dim=backbone.hidden_size).to(device)
    frozen = cfg.backbone.train == "frozen"
    trainable = [p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad]
    optimizer = instantiate(cfg.optim)(params=trainable)

    if frozen:
        features = {split: extract_features(backbone, data, split, records[split], cfg.trainer.embed_batch_size,
                                            device) for split in records}

    def embed_batch(split: str, index: list[int]) -> torch.Tensor:
        if frozen:
            return head(features[split][index].to(device))
        return head(encode_images(backbone, data, split, [records[split][i] for i in index], device))

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        head.eval()
        backbone.eval()
        order = list(range(len(records["val"])))
        embeddings = torch.cat([embed_batch("val", chunk).cpu()
                                for chunk in batched(order, cfg.trainer.embed_batch_size)])
        return with_class_names(retrieval_metrics(embeddings, labels["val"], len(label_map)), list(label_map))

    majority = Counter(labels["train"].tolist()).most_common(1)[0][0]
    results = {"untrained": evaluate(), "chance": chance_metrics(labels["val"], majority)}
    tracker = start_tracker(cfg, output_dir)
    try:
        tracker.summarize(data.issue_summary())  # counts of skipped/filtered records and images
        tracker.log(scalars(results["untrained"], "val/untrained/"), step=0)
        step = 0
        progress = tqdm(total=cfg.trainer.epochs * len(sampler), desc="train", unit="step")
        for epoch in range(1, cfg.trainer.epochs + 1):
            head.train()
            backbone.train()
            for index in sampler:
                embeddings = embed_batch("train", index)
                loss, mined = loss_fn(embeddings, labels["train"][index].to(device))
                optimizer.zero_grad(set_to_none=True)
                if loss.requires_grad:
                    loss.backward()
                    optimizer.step()
                step += 1
                progress.update()
                progress.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}", mined=mined)
                tracker.log({"train/loss": loss.item(), "train/mined_triplets": mined, "epoch": epoch}, step=step)
            results["trained"] = evaluate()
            tracker.log(scalars(results["trained"], "val/"), step=step)
            log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4f}" for k, v in scalars(results["trained"], "").items()))
        progress.close()

        save_checkpoint(output_dir / "checkpoints" / "last.pt", head=head.state_dict(),
                        backbone_trainable=backbone.trainable_state_dict(), label_map=label_map,
                        config=OmegaConf.to_container(cfg, resolve=True), epoch=cfg.trainer.epochs)
        results = {name: results[name] for name in ("trained", "untrained", "chance")}
        (output_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
        tracker.summarize({k: v for model, metrics in results.items() for k, v in scalars(metrics, f"{model}/").items()})
        log.info("results (%d val images):\n%s", len(labels["val"]), format_table(results))
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish()
    return results


register_configs()


@hydra.main(version_base="1.3", config_path="pkg://charfeat.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return train(cfg)["trained"][cfg.optimized_metric]


if __name__ == "__main__":
    main()
