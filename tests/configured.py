"""Configured objects for tests, built as composition builds them: a schema's defaults (or a group
option's YAML on top of them) with the test's own values on top, so no test re-states a default;
and a checkpoint loader that, like any other program, has none of charfeat's classes."""

import pickle
import types
from importlib.resources import files

import torch

from omegaconf import OmegaConf

from charfeat.config import BackboneConfig, build


def option(group: str, name: str) -> dict:
    """What ``<group>=<name>`` sets on top of its schema: its YAML, the defaults list left out."""
    values = OmegaConf.to_container(OmegaConf.load(files("charfeat.conf").joinpath(group).joinpath(f"{name}.yaml")))
    values.pop("defaults")
    return values


def tiny_backbone(path, **values):
    """The tiny Qwen3-VL at ``path`` as ``backbone=tiny`` configures it (float32, the tiny processor's
    pixel budget), its feature cache off unless given, ``values`` on top."""
    return build(BackboneConfig, **{**option("backbone", "tiny"), "name_or_path": str(path), "feature_cache": None,
                                    **values})


class _WithoutCharfeat(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "charfeat":
            raise pickle.UnpicklingError(f"the checkpoint needs charfeat's {module}.{name} to load")
        return super().find_class(module, name)


def load_without_charfeat(path) -> dict:
    """torch.load of a checkpoint, refusing any pickled charfeat object (an Enum member in the config)."""
    strict = types.SimpleNamespace(Unpickler=_WithoutCharfeat, load=pickle.load, __name__="pickle")
    return torch.load(path, weights_only=False, pickle_module=strict)
