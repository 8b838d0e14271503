import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from charfeat.config import BackboneConfig
from charfeat.models.backbone.model import Qwen3VLBackbone
from configured import option

CONF_DIR = Path(__file__).resolve().parents[3] / "conf" / "backbone"
NAMES = ["tiny", "small", "qwen3_vl_2b", "qwen3_vl_4b", "qwen3_vl_8b", "qwen3_vl_embedding_2b", "qwen3_vl_embedding_8b"]


def composed(name: str):
    """The option as composition makes it: the schema's defaults, the option's YAML on top."""
    assert list(OmegaConf.load(CONF_DIR / f"{name}.yaml").defaults) == ["/schema/backbone/backbone@_here_", "_self_"]
    return OmegaConf.merge(OmegaConf.structured(BackboneConfig), option("backbone", name))


def test_every_option_is_tested():
    assert sorted(p.stem for p in CONF_DIR.glob("*.yaml")) == sorted(NAMES)


def test_schema_keys_are_the_constructors_parameters():
    params = inspect.signature(Qwen3VLBackbone.__init__).parameters
    assert set(OmegaConf.structured(BackboneConfig)) - {"_target_"} == set(params) - {"self"}
    assert all(p.default is inspect.Parameter.empty for p in params.values())  # the schema holds the defaults


@pytest.mark.parametrize("name", NAMES)
def test_variants_state_only_what_differs(name):
    real = name not in ("tiny", "small")
    embedding = "embedding" in name
    assert set(option("backbone", name)) == ({"name_or_path"} | ({"format", "pooling"} if embedding else set())
                                             | (set() if real else {"dtype", "max_pixels", "build_random"}))
    cfg = composed(name)
    assert cfg._target_ == "charfeat.models.backbone.model.Qwen3VLBackbone"
    assert cfg.build_random == (None if real else name)
    assert cfg.dtype == ("bfloat16" if real else "float32")
    assert cfg.format == ("embedding" if embedding else "chat")  # Qwen3-VL-Embedding's own input format
    assert cfg.pooling == ("last" if embedding else "mean")
    assert cfg.instruction == "Represent the user's input." and cfg.embed_dim is None
    assert cfg.max_pixels == (448 * 448 if real else None)
    if real:
        assert cfg.name_or_path.startswith("Qwen/Qwen3-VL-")


def test_tiny_config_instantiates(tmp_path, make_image):
    from hydra.utils import instantiate

    cfg = OmegaConf.create({"paths": {"cache_dir": str(tmp_path)}, "backbone": composed("tiny")})
    backbone = instantiate(cfg.backbone)
    assert isinstance(backbone, Qwen3VLBackbone)
    assert (tmp_path / "models" / "tiny-qwen3-vl" / "config.json").exists()
    assert backbone.feature_cache_dir == str(tmp_path / "features")
    out = backbone(**backbone.preprocess([make_image(96, 96, 0)]))
    assert out.shape == (1, backbone.hidden_size) and torch.isfinite(out).all()
