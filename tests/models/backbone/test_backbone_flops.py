"""FLOPs per image from the config, checked against the published figure and a meta-device model."""

import pytest
import torch

from charfeat.models.backbone.flops import QWEN3_VL_SIZES, forward_flops, qwen3_vl_config


@pytest.mark.parametrize(("pixels", "tflops"), [(448, 1.2), (768, 3.8)])
def test_2b_matches_the_known_figure(pixels, tflops):
    flops = forward_flops(qwen3_vl_config("2b"), pixels, pixels)
    assert flops["llm_tokens"] == (pixels // 32) ** 2 + 24
    assert flops["total"] == pytest.approx(tflops * 1e12, rel=0.02)


@pytest.mark.parametrize("size", QWEN3_VL_SIZES)
def test_linear_flops_equal_twice_the_linear_weights(size):
    from transformers import Qwen3VLModel

    config = qwen3_vl_config(size)
    with torch.device("meta"):
        model = Qwen3VLModel(config)
    text_linear = sum(m.weight.numel() for m in model.language_model.layers.modules()
                      if isinstance(m, torch.nn.Linear))
    vision_linear = sum(m.weight.numel() for m in model.visual.blocks.modules() if isinstance(m, torch.nn.Linear))
    one, two = forward_flops(config, 448, 448, text_tokens=0), forward_flops(config, 448, 448, text_tokens=1)
    seq = one["llm_tokens"]
    t = config.text_config
    attention = 2 * ((seq + 1) ** 2 - seq ** 2) * t.head_dim * t.num_attention_heads * t.num_hidden_layers
    assert two["language"] - one["language"] == 2 * text_linear + attention
    patches = one["patches"]
    patch_embed = 2 * patches * 1536 * config.vision_config.hidden_size
    assert one["vision"] - patch_embed - 4 * patches ** 2 * config.vision_config.hidden_size * \
        config.vision_config.depth == 2 * patches * vision_linear


def test_sizes_must_fit_the_patch_grid():
    with pytest.raises(ValueError, match="multiple of 32"):
        forward_flops(qwen3_vl_config("2b"), 450, 448)
