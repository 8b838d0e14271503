"""Train and evaluate a style-embedding model from a composed config.

    python -m charfeat.train sampler.p=8 loss.margin=0.3
    python -m charfeat.train -m loss.margin=0.1,0.3

Validates the config, builds every object from its config group and hands them to
`charfeat.training.loop.Trainer`. Every run writes metrics.json, label_mapping.json and
checkpoints/last.pt and best.pt (the trained parts only) under paths.output_dir.
"""

import functools
import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from charfeat.cli import hydra_main
from charfeat.config import register_configs, validate
from charfeat.errors import ConfigError

log = logging.getLogger(__name__)
logging.getLogger("PML").setLevel(logging.WARNING)  # one line per k-NN call otherwise


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Validate ``cfg``, build everything from it, train, evaluate; return metrics.json's content (see Trainer.fit).

    Resuming (``cfg.ckpt_path``, or this run dir's own unfinished ``last.pt``) with the command line's
    ``overrides`` continues the checkpoint's config with those overrides on top; without them (a call
    from Python), ``cfg`` is used as is.
    """
    import torch  # here, not at the top: --help answers without loading torch
    from hydra.utils import instantiate

    from charfeat.evaluation.results import format_table
    from charfeat.models.backbone.hub import check_available
    from charfeat.training import distributed
    from charfeat.training.checkpoint import read_checkpoint
    from charfeat.training.resume import resume_path, resumed_config
    from charfeat.training.state import seed_everything

    validate(cfg)  # before anything is built: a bad value costs seconds, not a model load
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).expanduser().is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    rank, world_size = distributed.init()
    distributed.quiet_other_ranks(rank)
    source = distributed.broadcast_object(resume_path(cfg) if rank == 0 else None)  # rank 0's run dir decides
    saved = read_checkpoint(source) if source is not None else None  # once, here
    if saved is not None and overrides is not None:
        cfg = resumed_config(cfg, overrides, saved["config"], source)
        validate(cfg)
    tc = cfg.trainer
    check_available(cfg.backbone.name_or_path, cfg.backbone.revision, cfg.backbone.build_random)  # before the data
    device = distributed.pick_device(str(tc.device))
    seed_everything(tc.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    output_dir = Path(cfg.paths.output_dir)
    if rank == 0:  # alone logs to W&B and writes the output dir
        output_dir.mkdir(parents=True, exist_ok=True)
    log.info("data: %s", cfg.data._target_)
    with instantiate(cfg.data) as data:  # a source may hold threads and connections (S3): closed on the way out
        trainer = build_trainer(cfg, data, output_dir, rank, world_size, device)
        results = trainer.fit(saved, source)
    if rank == 0 and trainer.completed:
        p = trainer.progress
        log.info("results (%d val images):\n%s\ntrained = epoch %d of %d, the best %s (%.4f): checkpoints/best.pt",
                 len(trainer.records["val"]), format_table(results), p.best_epoch, p.epoch, tc.monitor, p.best)
    return results


def build_trainer(cfg: DictConfig, data, output_dir: Path, rank: int, world_size: int,
                  device: "torch.device") -> "Trainer":
    """Sampler, loss, backbone and head from their config groups and the records of ``data``, in a Trainer."""
    from hydra.utils import instantiate

    from charfeat.data.labels import build_label_map, save_label_map
    from charfeat.data.leakage import check_leakage
    from charfeat.tracking import start_tracker
    from charfeat.training import distributed
    from charfeat.training.loop import Trainer

    tc = cfg.trainer
    if not data.labelled:
        raise ConfigError(f"data: {cfg.data._target_} has no labels to train on; embed it with charfeat.embed")
    with distributed.main_process_first():
        records = {split: data.records(split) for split in ("train", "val")}
    check_leakage(data, records, **data.leak_options, device=device)  # before any model is built
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
    head = instantiate(cfg.head)(in_dim=backbone.feature_dim).to(device)
    augment = instantiate(cfg.augment)
    if augment.views > 1 and not backbone.frozen:
        log.warning("augment.views=%d is for a frozen backbone's feature cache: a trainable one sees a new view of "
                    "each image every epoch", augment.views)
    return Trainer(tc, data=data, records=records, label_map=label_map, sampler=sampler, backbone=backbone,
                   head=head, loss_fn=loss_fn.to(device), make_optimizer=instantiate(cfg.optim),
                   tracker=start_tracker(cfg, output_dir, rank == 0), output_dir=output_dir,
                   config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), run_name=cfg.task_name,
                   evaluation=cfg.eval, augment=augment, rank=rank, world_size=world_size, device=device)


register_configs()


@hydra_main("train")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from charfeat.training import distributed
    from charfeat.training.signals import TrainingInterrupted

    try:
        trained = train(cfg, overrides=list(HydraConfig.get().overrides.task)).get("trained")  # absent when trainer.max_steps stopped the first epoch
        return trained[cfg.optimized_metric] if trained else None
    except TrainingInterrupted as stop:
        log.warning("%s", stop)
        stop.hand_over()  # submitit's SIGUSR2 handler requeues the job (and exits)
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
