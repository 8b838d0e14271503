"""Train and evaluate a style-embedding model from a composed config.

    python -m charfeat.train sampler.p=8 loss.margin=0.3
    python -m charfeat.train -m loss.margin=0.1,0.3

Builds every object from its config group and hands them to `charfeat.training.loop.Trainer`.
Every run writes metrics.json, label_mapping.json and checkpoints/last.pt (the trained parts only)
under paths.output_dir.
"""

import functools
import logging
import os
import sys
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from charfeat.config import register_configs
from charfeat.data.labels import build_label_map, save_label_map
from charfeat.evaluation.results import format_table
from charfeat.tracking import start_tracker
from charfeat.training import distributed
from charfeat.training.loop import Trainer
from charfeat.training.signals import TrainingInterrupted
from charfeat.training.state import resumed_config, seed_everything

log = logging.getLogger(__name__)
logging.getLogger("PML").setLevel(logging.WARNING)  # one line per k-NN call otherwise


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Build everything from ``cfg``, train, evaluate; return {"trained", "untrained", "chance"}.

    Resuming (``cfg.ckpt_path``) with the command line's ``overrides`` continues the checkpoint's
    config with those overrides on top; without them (a call from Python), ``cfg`` is used as is.
    """
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    if cfg.ckpt_path is not None and overrides is not None:
        cfg = resumed_config(cfg, overrides)
    tc = cfg.trainer
    if tc.epochs < 1:
        raise ValueError(f"trainer.epochs must be >= 1, got {tc.epochs}")
    if tc.accumulate < 1:
        raise ValueError(f"trainer.accumulate must be >= 1, got {tc.accumulate}")
    rank, world_size, device = distributed.setup(tc.device)
    seed_everything(tc.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    output_dir = Path(cfg.paths.output_dir)
    if rank == 0:  # alone logs to W&B and writes the output dir
        output_dir.mkdir(parents=True, exist_ok=True)

    log.info("data: %s", cfg.data._target_)
    with instantiate(cfg.data) as data:  # a source may hold threads and connections (S3): closed on the way out
        return _train_on(cfg, data, rank, world_size, device, output_dir)


def _train_on(cfg: DictConfig, data, rank: int, world_size: int, device: torch.device,
              output_dir: Path) -> dict[str, dict[str, float]]:
    tc = cfg.trainer
    if not data.labelled:
        raise ValueError(f"data: {cfg.data._target_} has no labels to train on; embed it with charfeat.embed")
    with distributed.main_process_first():
        records = {split: data.records(split) for split in ("train", "val")}
    label_map = build_label_map(records["train"])
    log.info("classes: %d; images: %d train, %d val", len(label_map), len(records["train"]), len(records["val"]))
    sampler = instantiate(cfg.sampler)(labels=[label_map[r.label] for r in records["train"]], seed=tc.seed,
                                       class_names=list(label_map), rank=rank, world_size=world_size)
    loss_fn = instantiate(cfg.loss)
    if isinstance(loss_fn, functools.partial):  # a loss with weights sized by the run (ArcFace)
        loss_fn = loss_fn(num_classes=len(label_map), embedding_dim=cfg.head.out_dim)
    if rank == 0:
        save_label_map(label_map, output_dir / "label_mapping.json")

    log.info("backbone: %s (%s)", cfg.backbone.name_or_path, cfg.backbone.train)
    with distributed.main_process_first():
        backbone = instantiate(cfg.backbone).to(device)
    head = instantiate(cfg.head)(in_dim=backbone.hidden_size).to(device)

    trainer = Trainer(tc, data=data, records=records, label_map=label_map, sampler=sampler, backbone=backbone,
                      head=head, loss_fn=loss_fn.to(device), make_optimizer=instantiate(cfg.optim),
                      tracker=start_tracker(cfg, output_dir, rank == 0), output_dir=output_dir,
                      config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), run_name=cfg.task_name,
                      rank=rank, world_size=world_size, device=device)
    results = trainer.fit(cfg.ckpt_path)
    if rank == 0 and trainer.completed:
        p = trainer.progress
        log.info("results (%d val images; best %s %.4f at epoch %d, saved as checkpoints/best.pt):\n%s",
                 len(records["val"]), tc.monitor, p.best, p.best_epoch, format_table(results))
    return results


register_configs()


@hydra.main(version_base="1.3", config_path="pkg://charfeat.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    try:
        from hydra.core.hydra_config import HydraConfig

        trained = train(cfg, overrides=list(HydraConfig.get().overrides.task)).get("trained")  # absent when trainer.max_steps stopped the first epoch
        return trained[cfg.optimized_metric] if trained else None
    except TrainingInterrupted as stop:
        log.warning("%s", stop)
        sys.exit(128 + stop.signum)
    finally:
        distributed.teardown()


def cli() -> None:
    """Entry point; under torchrun, processes other than rank 0 write no Hydra output dir."""
    if int(os.environ.get("RANK", "0")) > 0:
        sys.argv += ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=stdout"]
    main()


if __name__ == "__main__":
    cli()
