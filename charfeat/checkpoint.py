"""Rebuild a trained model from a checkpoint written by `charfeat.train`.

A checkpoint holds only what training changed: the head's weights, the backbone parameters that
trained (none when frozen, the adapter for LoRA), the label mapping and the resolved config. The
backbone is built again from that config, so a frozen one is loaded from its `name_or_path`
exactly as in training (a hub id, or a local directory that must still be there).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch import nn

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("head", "backbone_trainable", "label_map", "config")


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
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise KeyError(f"{path} is not a charfeat checkpoint: it lacks {missing}")
    return checkpoint


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, nn.Module, dict, dict]:
    """checkpoint path -> (backbone, head, label_map, config), both modules in eval mode on ``device``.

    The backbone and head are instantiated from the checkpoint's saved ``config`` (the head with
    ``in_dim = backbone.hidden_size``, as in training); the head's state is loaded strictly and the
    saved backbone parameters with ``strict=False``, after which every saved key must have been
    used and every trainable backbone parameter must have been given.
    """
    checkpoint = read_checkpoint(path)
    config = checkpoint["config"]
    log.info("checkpoint %s: backbone %s (%s)", path, config["backbone"]["name_or_path"],
             config["backbone"].get("train", "frozen"))
    backbone = instantiate(config["backbone"])
    head = instantiate(config["head"], _partial_=False, in_dim=backbone.hidden_size)
    head.load_state_dict(checkpoint["head"])

    try:
        backbone.load_trainable_state_dict(checkpoint["backbone_trainable"])
    except KeyError as err:
        raise KeyError(f"{path}: {err.args[0]}") from None
    return backbone.to(device).eval(), head.to(device).eval(), dict(checkpoint["label_map"]), config
