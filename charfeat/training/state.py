"""A run's state: progress counters and the random number generators that exact resume restores.

A checkpoint (``charfeat.training.checkpoint``) holds only what training changed: the head, the
backbone parameters that trained (none when frozen, the adapter for LoRA), the loss's own weights,
the optimizer, scheduler, sampler and RNG states, the progress counters, the metrics so far, the
label mapping and the resolved config. The backbone itself is built again from that config.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

log = logging.getLogger(__name__)


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
    torch.manual_seed(seed)  # every CUDA device too


def rng_state() -> dict:
    """This process's generators: Python, numpy, torch's CPU one and, where CUDA is in use, every
    CUDA device's (head dropout and LoRA dropout draw from them on GPU)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    saved, visible = state.get("cuda") or [], torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(saved) != visible and (saved or torch.cuda.is_initialized()):
        log.warning("resume: the checkpoint holds CUDA RNG states of %d device(s), this process sees %d: random "
                    "draws on the GPU (dropout) will not replay exactly", len(saved), visible)
    for device, device_state in enumerate(saved[:visible]):
        torch.cuda.set_rng_state(device_state, device)
