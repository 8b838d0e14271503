"""Checkpoint files: written atomically as plain data, read without running any code.

A checkpoint (``checkpoints/last.pt``, ``best.pt``) is one ``torch.save`` file that holds tensors and
plain containers only (dict, list, tuple, str, int, float, bool, None): numpy arrays and scalars are
converted on save, anything else is refused then. It is read with ``torch.load(weights_only=True)``,
whose unpickler knows no other global, so a crafted file cannot run code on load: it is refused,
naming what it tried to load. The config inside is data too, but instantiating it builds whatever
its ``_target_`` keys name; only charfeat's classes and those of the libraries it configures
(``TARGET_PREFIXES``) are allowed, anything else is refused by name before anything is built.
"""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charfeat.errors import UserError

REQUIRED_KEYS = ("head", "backbone_trainable", "label_map", "config")
# what a checkpoint's config may instantiate: charfeat's classes, the optimizer, the losses and miners
TARGET_PREFIXES = ("charfeat.", "torch.optim.", "pytorch_metric_learning.")


class CheckpointError(UserError):
    """A checkpoint that cannot be read safely or written."""


def plain(value: Any, where: str = "checkpoint") -> Any:
    """``value`` as what ``torch.load(weights_only=True)`` reads back: numpy arrays become tensors,
    numpy scalars Python numbers; any other object is an error naming where it sits."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: plain(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f"{where} is a {type(value).__qualname__}: a checkpoint holds tensors and plain data only")


def save_checkpoint(path: Path, **state) -> None:
    """Write ``state`` (plain data) to a temp file beside ``path``, then rename it over ``path``.

    A failed write (a full disk, a crash) removes the temp file and leaves the previous checkpoint
    at ``path`` as it was.
    """
    state = plain(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:  # a Python file: a failed write raises OSError with its errno
            torch.save(state, f)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(f"no space left writing {path} ({err.strerror}); the previous checkpoint "
                                  "there, if any, is kept: free space and resume from it") from err
        if isinstance(err, OSError):
            raise CheckpointError(f"cannot write checkpoint {path}: {err.strerror or err}") from err
        raise
    os.replace(tmp, path)


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """The checkpoint dict at ``path``: plain data only, with the keys every charfeat checkpoint has
    and a config that instantiates nothing outside ``TARGET_PREFIXES``. ``mmap``: tensors are read
    from disk only when touched (to look at a checkpoint's counters)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist (a run writes <output_dir>/checkpoints/last.pt)")
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {path} is a directory: pass the .pt file, e.g. {path / 'last.pt'}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"checkpoint {path} was refused: it holds objects other than tensors and plain "
                              f"data, and loading them could run code ({_refused_global(err)}). charfeat "
                              "writes plain data only; load checkpoints from sources you trust") from None
    if not isinstance(checkpoint, dict):
        raise KeyError(f"{path} is not a charfeat checkpoint: it holds a {type(checkpoint).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise KeyError(f"{path} is not a charfeat checkpoint: it lacks {missing}")
    check_targets(checkpoint["config"], f"checkpoint {path}")
    return checkpoint


def _refused_global(err: Exception) -> str:
    """The line of torch's message that names what the file wanted to load."""
    lines = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line or "Unsupported" in line]
    return lines[0] if lines else str(err).splitlines()[0]


def check_targets(config: Any, source: str, where: str = "") -> None:
    """Refuse a config that would instantiate anything but an allowed class (``TARGET_PREFIXES``).

    The name must start with an allowed prefix and resolve to a class defined under it, so
    ``charfeat.some.module.os.system`` (a function reached through a module attribute) is refused too.
    """
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "_target_":
                _check_target(value, source, where or "config")
            else:
                check_targets(value, source, f"{where}.{key}" if where else str(key))
    elif isinstance(config, list):
        for i, value in enumerate(config):
            check_targets(value, source, f"{where}[{i}]")


def _check_target(target: Any, source: str, where: str) -> None:
    from hydra.utils import get_class

    refused = CheckpointError(f"{source}: {where}._target_={target!r} is not allowed; a checkpoint's config may "
                              f"build only classes under {', '.join(TARGET_PREFIXES)}")
    if not isinstance(target, str) or not target.startswith(TARGET_PREFIXES):
        raise refused
    try:
        cls = get_class(target)
    except Exception:  # noqa: BLE001 - not importable, or not a class: refused either way
        raise refused from None
    if not f"{cls.__module__}.".startswith(TARGET_PREFIXES):
        raise refused
