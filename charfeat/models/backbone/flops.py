"""Forward FLOPs of one image through a Qwen3-VL embedding backbone, from its config.

Counts multiply-adds as 2 FLOPs in every linear layer and attention product; norms, activations,
rotary embeddings and softmax are left out (under 1 %). The LM head is never run (AutoModel), so it
is not counted. Model-FLOPs utilisation = images/s x `forward_flops(...)["total"]` / peak FLOP/s.
"""

from __future__ import annotations

# Published Qwen3-VL Instruct sizes: text hidden, layers, heads, kv heads, ffn; vision depth,
# hidden, ffn; deepstack layers. All: text head_dim 128, vision 16 heads, patch 16, merge 2.
QWEN3_VL_SIZES = {
    "2b": (2048, 28, 16, 8, 6144, 24, 1024, 4096, [5, 11, 17]),
    "4b": (2560, 36, 32, 8, 9728, 24, 1024, 4096, [5, 11, 17]),
    "8b": (4096, 36, 32, 8, 12288, 27, 1152, 4304, [8, 16, 24]),
}


def qwen3_vl_config(size: str):
    """A `Qwen3VLConfig` with the published sizes of Qwen3-VL-{2B,4B,8B} (no weights needed)."""
    from transformers import Qwen3VLConfig

    hidden, layers, heads, kv, ffn, v_depth, v_hidden, v_ffn, deepstack = QWEN3_VL_SIZES[size]
    return Qwen3VLConfig(
        text_config={"vocab_size": 151936, "hidden_size": hidden, "num_hidden_layers": layers,
                     "num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": ffn,
                     "head_dim": 128},
        vision_config={"depth": v_depth, "hidden_size": v_hidden, "intermediate_size": v_ffn, "num_heads": 16,
                       "out_hidden_size": hidden, "deepstack_visual_indexes": deepstack},
    )


def forward_flops(config, height: int, width: int, text_tokens: int = 24) -> dict[str, float]:
    """FLOPs of one forward pass for an image of height x width pixels (already a multiple of
    patch x merge) plus `text_tokens` chat-template and prompt tokens. Returns vision, merger,
    language-model and total FLOPs, and the sequence lengths."""
    v, t = config.vision_config, config.text_config
    factor = v.patch_size * v.spatial_merge_size
    if height % factor or width % factor:
        raise ValueError(f"{height}x{width} is not a multiple of {factor} (patch x merge)")
    patches = (height // v.patch_size) * (width // v.patch_size)
    merged = patches // v.spatial_merge_size ** 2
    hid, ffn = v.hidden_size, v.intermediate_size
    patch_embed = 2 * patches * (v.in_channels * v.temporal_patch_size * v.patch_size ** 2) * hid
    block = 2 * patches * (4 * hid * hid + 2 * hid * ffn) + 4 * patches * patches * hid
    vision = patch_embed + v.depth * block
    merge_in = hid * v.spatial_merge_size ** 2
    merger = (1 + len(v.deepstack_visual_indexes)) * 2 * merged * (merge_in * merge_in + merge_in * v.out_hidden_size)

    seq = merged + text_tokens
    d, head_dim = t.hidden_size, t.head_dim
    q, kv = t.num_attention_heads * head_dim, t.num_key_value_heads * head_dim
    layer_params = d * q + 2 * d * kv + q * d + 3 * d * t.intermediate_size
    attention = 2 * seq * seq * q  # causal: QK^T and AV over half the pairs each
    language = t.num_hidden_layers * (2 * seq * layer_params + attention)
    total = vision + merger + language
    return {"vision": vision, "merger": merger, "language": language, "total": total,
            "patches": patches, "llm_tokens": seq}
