"""Real Qwen3-VL sizes, built on the meta device (no weights, no memory)."""

import pytest
import torch

VOCAB = 151936
# text hidden, layers, heads, kv heads, ffn; vision depth, hidden, ffn; deepstack layers; tied; params (B)
SIZES = {
    "2b": (2048, 28, 16, 8, 6144, 24, 1024, 4096, [5, 11, 17], True, 2.13),
    "4b": (2560, 36, 32, 8, 9728, 24, 1024, 4096, [5, 11, 17], True, 4.44),
    "8b": (4096, 36, 32, 8, 12288, 27, 1152, 4304, [8, 16, 24], False, 8.77),
}


@pytest.mark.parametrize("size", SIZES)
def test_real_sizes_without_weights(size):
    from transformers import Qwen3VLConfig, Qwen3VLModel

    hidden, layers, heads, kv, ffn, v_depth, v_hidden, v_ffn, deepstack, tied, billions = SIZES[size]
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": VOCAB, "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": ffn, "head_dim": 128,
            "rope_parameters": {"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                                "mrope_interleaved": True},
        },
        vision_config={
            "depth": v_depth, "hidden_size": v_hidden, "intermediate_size": v_ffn, "num_heads": 16,
            "out_hidden_size": hidden, "deepstack_visual_indexes": deepstack,
        },
        tie_word_embeddings=tied,
    )
    with torch.device("meta"):
        model = Qwen3VLModel(config)
    assert not hasattr(model, "lm_head")
    count = sum(p.numel() for p in model.parameters())
    # The published count includes an untied LM head (8B only); AutoModel never builds it.
    expected = billions * 1e9 - (0 if tied else VOCAB * hidden)
    assert abs(count - expected) / expected < 0.005
