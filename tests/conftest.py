"""Shared fixtures: a per-session cache dir (tiny model, sample set) and composed configs.

Configs are composed the lightning-hydra-template way (compose API) and shrunk for speed;
each test's copy writes to its own tmp_path.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from charfeat.config import register_configs


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One cache for the session, so the tiny model and sample set are built once."""
    path = tmp_path_factory.mktemp("charfeat-cache")
    os.environ["CHARFEAT_CACHE_DIR"] = str(path)
    return path


@pytest.fixture
def compose_cfg(cache_dir, tmp_path):
    """compose_cfg(*overrides) -> the train config, writing under this test's tmp_path."""

    def _compose(*overrides: str) -> DictConfig:
        register_configs()
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="charfeat.conf", version_base="1.3"):
            cfg = compose("train", overrides=list(overrides))
        with open_dict(cfg):
            cfg.paths.cache_dir = str(cache_dir)
            cfg.paths.output_dir = str(tmp_path / "run")
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
