"""A tiny, random-initialised Qwen3-VL saved like a real checkpoint.

Tests and smoke runs need the real loading path (`AutoModel.from_pretrained` + processor) without
a model hub or GPU, so we build a few-MB model with Qwen3-VL's real architecture and image
preprocessing (patch 16, temporal patch 2, merge 2, mean = std = 0.5), a tokenizer built without
training, and a pixel budget suited to tiny images (a 96x96 image gives 9 LLM tokens).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen3-VL's chat template cut down to what charfeat renders: text and image items, no tools,
# no video, no thinking blocks.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TINY_MIN_PIXELS = 64 * 64
TINY_MAX_PIXELS = 128 * 128
SMALL_PIXELS = 224 * 224  # every image becomes about 224 x 224: 49 LLM tokens

# The random models charfeat builds on first use (backbone.build_random): "tiny" for tests and smoke
# runs (0.9 M parameters); "small" (~20 M) has enough compute per image that extraction weighs against
# the head's training as with a real backbone, for benchmarks of what a cache or pipeline saves.
RANDOM_SIZES = {
    "tiny": ({}, (TINY_MIN_PIXELS, TINY_MAX_PIXELS)),
    "small": ({"hidden_size": 512, "num_layers": 4, "num_heads": 8, "num_kv_heads": 4, "vision_hidden_size": 256,
               "vision_depth": 4}, (SMALL_PIXELS, SMALL_PIXELS)),
}


def build_tokenizer():
    """Byte-level BPE tokenizer with no merges: every byte is a token, plus Qwen's special tokens."""
    from tokenizers import AddedToken, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[])
    tokenizer.add_tokens(
        [AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS], special_tokens=True
    )
    return tokenizer


def build_image_processor(min_pixels: int = TINY_MIN_PIXELS, max_pixels: int = TINY_MAX_PIXELS):
    """Qwen3-VL's real preprocessing values; only the pixel budget is small."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        min_pixels=min_pixels,
        max_pixels=max_pixels,
    )


def tiny_config(
    tokenizer,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vision_hidden_size: int = 64,
    vision_depth: int = 2,
    vision_heads: int = 4,
):
    """A Qwen3VLConfig with real structure at toy width; special-token ids match the tokenizer."""
    from transformers import Qwen3VLConfig

    if hidden_size % num_heads or (hidden_size // num_heads) % 4:
        raise ValueError(f"hidden_size={hidden_size} must split into num_heads={num_heads} heads of a multiple of 4")
    head_dim = hidden_size // num_heads
    half = head_dim // 2  # M-RoPE sections (t, h, w) must sum to head_dim / 2
    mrope_section = [half // 2, half // 4, half - half // 2 - half // 4]
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"),
        ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"),
        ("vision_end_token_id", "<|vision_end|>"),
    )}
    return Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": num_kv_heads,
            "head_dim": head_dim,
            "max_position_embeddings": 4096,
            "pad_token_id": tokenizer.pad_token_id,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": mrope_section,
                "mrope_interleaved": True,
            },
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": vision_hidden_size,
            "intermediate_size": 2 * vision_hidden_size,
            "num_heads": vision_heads,
            "patch_size": 16,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "out_hidden_size": hidden_size,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": list(range(min(vision_depth, num_layers))),
        },
        tie_word_embeddings=False,
        **ids,
    )


def build_random_qwen3_vl(path: str | os.PathLike, size: str) -> Path:
    """Build and save the random Qwen3-VL of ``RANDOM_SIZES[size]`` at ``path`` (if nothing is there)."""
    config_kwargs, pixels = RANDOM_SIZES[size]
    return build_tiny_qwen3_vl(path, pixels=pixels, **config_kwargs)


def build_tiny_qwen3_vl(path: str | os.PathLike, hidden_size: int = 128, seed: int = 0,
                        pixels: tuple[int, int] = (TINY_MIN_PIXELS, TINY_MAX_PIXELS), **config_kwargs) -> Path:
    """Build and save a tiny random Qwen3-VL (model + processor, whose pixel budget is ``pixels``) at
    `path`; return the path.

    The directory is written atomically: everything goes to a temp dir beside `path`, which is then
    renamed into place. If `path` already exists (or another process wins the rename race), the
    existing directory is kept, so concurrent jobs all load the same weights.
    """
    import torch
    from transformers import Qwen3VLModel

    from charfeat.models.backbone.processor import Qwen3VLImageTextProcessor

    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer()
    processor = Qwen3VLImageTextProcessor(
        image_processor=build_image_processor(*pixels), tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    config = tiny_config(tokenizer, hidden_size=hidden_size, **config_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3VLModel(config)

    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the model dir is a shared cache
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        try:
            os.rename(staging, path)
        except OSError:
            if not path.exists():
                raise
            # Another process finished first: keep its copy.
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return path
