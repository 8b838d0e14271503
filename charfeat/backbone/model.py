"""Qwen3-VL as a frozen or trainable image-embedding backbone.

One image plus a fixed prompt goes through the chat template; the language model's last hidden
state is pooled into one vector per image. The model is loaded as `Qwen3VLModel` (AutoModel), which
has no LM head, so vocabulary logits are never computed. Pooling always honours the attention
mask, so an image's embedding does not depend on the other images in its batch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

POOLINGS = ("mean", "last", "vision")
TRAIN_MODES = ("frozen", "full")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _check_choice(key: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not one of {sorted(allowed)}")


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where `mask` is true. hidden: [B, T, H], mask: [B, T] -> [B, H]."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    counts = weights.sum(dim=1).clamp(min=1)
    return (hidden * weights).sum(dim=1) / counts


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of each row's last real token, for left or right padding. [B, T, H] -> [B, H]."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (positions * attention_mask.to(torch.long)).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class Qwen3VLBackbone(nn.Module):
    """Qwen3-VL image embedder: `preprocess(images)` then `forward(**inputs) -> [B, hidden_size]`.

    Args:
        name_or_path: hub id or local checkpoint directory.
        prompt: user text placed after the image in the chat turn.
        pooling: "mean" (masked mean of all real tokens), "last" (last real token, the native mode of
            Qwen3-VL-Embedding) or "vision" (mean over the image tokens only).
        train: "frozen" (no gradients, always eval mode, runs under no_grad) or "full".
        dtype: weights' dtype: "float32", "bfloat16" or "float16". Outputs are always float32.
        min_pixels, max_pixels: override the processor's pixel budget per image.
        attn_implementation: passed to `from_pretrained` ("sdpa", "eager", "flash_attention_2").
        build_tiny: build a tiny random model at `name_or_path` first if nothing is there.
    """

    def __init__(
        self,
        name_or_path: str,
        prompt: str = "Describe this person's appearance.",
        pooling: str = "mean",
        train: str = "frozen",
        dtype: str = "float32",
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        attn_implementation: str | None = "sdpa",
        build_tiny: bool = False,
    ):
        super().__init__()
        _check_choice("pooling", pooling, POOLINGS)
        _check_choice("train", train, TRAIN_MODES)
        _check_choice("dtype", dtype, DTYPES)
        from transformers import AutoModel

        from charfeat.backbone.processor import Qwen3VLImageTextProcessor

        if build_tiny and not Path(name_or_path).exists():
            from charfeat.backbone.tiny import build_tiny_qwen3_vl

            build_tiny_qwen3_vl(name_or_path)

        self.name_or_path = str(name_or_path)
        self.prompt = prompt
        self.pooling = pooling
        self.train_mode = train
        self.model = AutoModel.from_pretrained(
            self.name_or_path, dtype=DTYPES[dtype], attn_implementation=attn_implementation
        )
        self.processor = Qwen3VLImageTextProcessor.from_pretrained(self.name_or_path)
        self._set_pixel_budget(min_pixels, max_pixels)
        self.image_token_id = self.model.config.image_token_id

        self.model.requires_grad_(train == "full")
        if train == "frozen":
            self.model.eval()

    def _set_pixel_budget(self, min_pixels: int | None, max_pixels: int | None) -> None:
        """Override the image processor's pixel range (its `size` shortest/longest edge, in pixels)."""
        from transformers.image_utils import SizeDict

        size = self.processor.image_processor.size
        lo = size.shortest_edge if min_pixels is None else min_pixels
        hi = size.longest_edge if max_pixels is None else max_pixels
        if lo > hi:
            raise ValueError(f"min_pixels={lo} exceeds max_pixels={hi}")
        self.processor.image_processor.size = SizeDict(shortest_edge=lo, longest_edge=hi)

    @property
    def hidden_size(self) -> int:
        """Embedding width before any head: the text model's hidden size."""
        return self.model.config.text_config.hidden_size

    @property
    def frozen(self) -> bool:
        return self.train_mode == "frozen"

    def train(self, mode: bool = True) -> "Qwen3VLBackbone":
        """A frozen backbone stays in eval mode even when a parent module calls `.train()`."""
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def chat_text(self) -> str:
        """The chat-template text for one user turn: [image, prompt], no generation prompt."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    def preprocess(self, images: list) -> dict[str, torch.Tensor]:
        """PIL images -> model inputs (input_ids, attention_mask, mm_token_type_ids, pixel_values, image_grid_thw)."""
        if not images:
            raise ValueError("preprocess needs at least one image")
        text = self.chat_text()
        batch = self.processor(
            images=[image.convert("RGB") for image in images],
            text=[text] * len(images),
            padding=True,
            return_tensors="pt",
        )
        return dict(batch)

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Model inputs from `preprocess` -> pooled float32 embeddings [B, hidden_size]."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            device = self.model.device
            inputs = {key: value.to(device) for key, value in inputs.items()}
            hidden = self.model(**inputs, use_cache=False).last_hidden_state
            mask = inputs["attention_mask"].bool()
            if self.pooling == "mean":
                pooled = masked_mean(hidden, mask)
            elif self.pooling == "last":
                pooled = last_token(hidden, mask)
            else:
                pooled = masked_mean(hidden, mask & (inputs["input_ids"] == self.image_token_id))
            return pooled.float()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the parameters that train (none when frozen): what a checkpoint should store."""
        return {name: param.detach().clone() for name, param in self.named_parameters() if param.requires_grad}
