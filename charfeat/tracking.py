"""Experiment tracking: one W&B run per job, offline unless told otherwise, always finished.

wandb is imported only here and only when a run starts, so ``logger=none`` never loads it.
Images (the neighbour grid shows people's photos) go to an online W&B run only when
``logger.log_images=true`` says so; offline runs keep them by default, on this machine.
"""

import logging
import os
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from charfeat.config import WandbMode

log = logging.getLogger(__name__)


class WandbTracker:
    """A W&B run of ``run_config`` under ``output_dir``; the other arguments are the ``logger`` config
    group's (``charfeat.config.WandbConfig``)."""

    def __init__(self, run_config: dict, output_dir: str, project: str, entity: str | None, mode: WandbMode,
                 group: str | None, tags: list[str], log_images: bool | None):
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self._wandb = wandb
        self.mode = mode
        self.images = (mode == WandbMode.offline) if log_images is None else log_images
        self.run = wandb.init(project=project, entity=entity, mode=str(mode), group=group, tags=list(tags),
                              config=run_config, dir=str(Path(output_dir)), reinit="finish_previous")

    def log(self, metrics: dict, step: int | None = None) -> None:
        self.run.log(metrics, step=step)

    def summarize(self, metrics: dict) -> None:
        self.run.summary.update(metrics)

    def log_images(self, images: dict) -> None:
        """{name: path of an image file} -> one W&B image per name, where ``logger.log_images`` allows."""
        if not self.images:
            log.info("plots not sent to W&B (%s run, logger.log_images=%s): they stay in %s", self.mode,
                     self.images, ", ".join(str(path) for path in images.values()) or "the run dir")
            return
        self.run.log({name: self._wandb.Image(str(path)) for name, path in images.items()})

    def log_checkpoint(self, path: Path, name: str) -> None:
        """Upload a checkpoint as a model artifact; online only, offline runs keep it in the run dir."""
        if self.mode == WandbMode.online:
            artifact = self._wandb.Artifact(name, type="model")
            artifact.add_file(str(path))
            self.run.log_artifact(artifact)

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


class NoTracker:
    """Stands in for a tracker when ``logger=none``: records nothing, imports nothing."""

    def log(self, metrics: dict, step: int | None = None) -> None:
        pass

    def summarize(self, metrics: dict) -> None:
        pass

    def log_images(self, images: dict) -> None:
        pass

    def log_checkpoint(self, path: Path, name: str) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def multirun_group() -> str | None:
    """The sweep dir's name, so the jobs of one multirun share a W&B group."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode.name != "MULTIRUN":
        return None
    return Path(hydra_cfg.sweep.dir).name


def start_tracker(cfg: DictConfig, output_dir: Path, main_process: bool) -> "WandbTracker | NoTracker":
    """The run's tracker from ``cfg.logger`` (None: no tracking); only the main process tracks."""
    if cfg.logger is None or not main_process:
        return NoTracker()
    log.info("tracker: %s (mode %s)", cfg.logger._target_, cfg.logger.mode)
    # partial: the resolved config holds _target_ keys that instantiate would try to build
    make_tracker = instantiate(cfg.logger, _partial_=True, output_dir=str(output_dir),
                               group=cfg.logger.group or multirun_group())
    return make_tracker(run_config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
