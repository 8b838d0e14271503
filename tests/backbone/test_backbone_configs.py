import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from charfeat.models.backbone.model import Qwen3VLBackbone

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "backbone"
NAMES = ["tiny", "qwen3_vl_2b", "qwen3_vl_4b", "qwen3_vl_8b", "qwen3_vl_embedding_2b", "qwen3_vl_embedding_8b"]


def load(name: str):
    cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    assert list(cfg.pop("defaults")) == ["/schema/backbone/backbone@_here_", "_self_"]
    return cfg


def test_every_option_is_tested():
    assert sorted(p.stem for p in CONF_DIR.glob("*.yaml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_config_keys_match_the_constructor(name):
    cfg = load(name)
    assert cfg._target_ == "charfeat.models.backbone.model.Qwen3VLBackbone"
    params = set(inspect.signature(Qwen3VLBackbone.__init__).parameters) - {"self"}
    assert set(cfg) - {"_target_"} == params
    real = name != "tiny"
    assert cfg.build_tiny is not real
    assert cfg.dtype == ("bfloat16" if real else "float32")
    assert cfg.pooling == ("last" if "embedding" in name else "mean")
    if real:
        assert cfg.name_or_path.startswith("Qwen/Qwen3-VL-") and cfg.max_pixels == 448 * 448


def test_tiny_config_instantiates(tmp_path, make_image):
    from hydra.utils import instantiate

    cfg = OmegaConf.create({"paths": {"cache_dir": str(tmp_path)}, "backbone": load("tiny")})
    backbone = instantiate(cfg.backbone)
    assert isinstance(backbone, Qwen3VLBackbone)
    assert (tmp_path / "models" / "tiny-qwen3-vl" / "config.json").exists()
    out = backbone(**backbone.preprocess([make_image(96, 96, 0)]))
    assert out.shape == (1, backbone.hidden_size) and torch.isfinite(out).all()
