"""A run's state and its checkpoints: progress counters, RNG state, save and load, resume's config.

A checkpoint holds only what training changed: the head, the backbone parameters that trained
(none when frozen, the adapter for LoRA), the loss's own weights, the optimizer, scheduler,
sampler and RNG states, the progress counters, the metrics so far, the label mapping and the
resolved config. The backbone itself is built again from that config.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("head", "backbone_trainable", "label_map", "config")
# belong to this run, not to the one being resumed: where it writes, what it resumes, when it pauses
RUN_LOCAL_KEYS = ("paths", "ckpt_path", "trainer.max_steps")


@dataclass
class Progress:
    """Where a run stands: counters, the best monitored value so far and the loss of every step."""

    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int = 0
    stale_epochs: int = 0
    loss_history: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "Progress":
        return cls(**{f.name: checkpoint[f.name] for f in fields(cls)})


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: Path, **state) -> None:
    """torch.save to a temp file, then rename: a crash never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict at ``path``, checked for the keys every charfeat checkpoint has.

    A checkpoint is a pickle (training also saves RNG states, which hold numpy arrays), loaded with
    ``weights_only=False``: load only checkpoints you trust.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist (a run writes <output_dir>/checkpoints/last.pt)")
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {path} is a directory: pass the .pt file, e.g. {path / 'last.pt'}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # RNG state stays on the CPU
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise KeyError(f"{path} is not a charfeat checkpoint: it lacks {missing}")
    return checkpoint


def config_changes(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ between a checkpoint's config and this run's."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


def resumed_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The checkpoint's config with this run's command-line overrides on top: they win, the rest is
    kept from the checkpoint, so resuming does not quietly change a run's settings."""
    if not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    saved = read_checkpoint(cfg.ckpt_path)["config"]
    merged = OmegaConf.create(saved)
    keys = [override.split("=", 1)[0].lstrip("+~") for override in overrides]
    for key in [*RUN_LOCAL_KEYS, *(k for k in keys if not k.startswith("hydra."))]:
        OmegaConf.update(merged, key, OmegaConf.select(cfg, key), force_add=True)  # a group (head=linear): its node
    for change in config_changes(saved, OmegaConf.to_container(merged, resolve=True, enum_to_str=True)):
        if not change.startswith(RUN_LOCAL_KEYS):
            log.info("resume: the command line wins: %s", change)
    return merged
