"""Experiment tracking: one W&B run per job, offline unless told otherwise, always finished.

wandb is imported only here and only when a run starts, so ``logger=none`` never loads it.
"""

import os
from pathlib import Path


class WandbTracker:
    def __init__(self, run_config: dict, output_dir: str, project: str = "charfeat", entity: str | None = None,
                 mode: str = "offline", group: str | None = None, tags: list[str] | tuple = ()):
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode must be offline, online or disabled, got {mode!r}")
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self._wandb = wandb
        self.mode = mode
        self.run = wandb.init(project=project, entity=entity, mode=mode, group=group, tags=list(tags),
                              config=run_config, dir=str(Path(output_dir)), reinit="finish_previous")

    def log(self, metrics: dict, step: int | None = None) -> None:
        self.run.log(metrics, step=step)

    def summarize(self, metrics: dict) -> None:
        self.run.summary.update(metrics)

    def log_images(self, images: dict) -> None:
        """{name: path of an image file} -> one W&B image per name."""
        self.run.log({name: self._wandb.Image(str(path)) for name, path in images.items()})

    def log_checkpoint(self, path: Path, name: str) -> None:
        """Upload a checkpoint as a model artifact; online only, offline runs keep it in the run dir."""
        if self.mode == "online":
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
