"""Qwen3-VL as a frozen or trainable image-embedding backbone.

One image (plus, optionally, the record's own text) and a fixed prompt go through the chat
template; one hidden layer of the language model is pooled into one vector per image. The model
is loaded as `Qwen3VLModel` (AutoModel), which has no LM head, so vocabulary logits are never
computed. Pooling always honours the attention mask, so an image's embedding does not depend on
the other images in its batch, their sizes or the length of their texts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from charfeat.models.backbone.pooling import last_token, masked_mean

log = logging.getLogger(__name__)

POOLINGS = ("mean", "last", "vision")
TRAIN_MODES = ("frozen", "lora", "vision", "full")
TEXT_MODES = ("none", "caption", "text_input")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# LoRA on every attention and MLP projection of the language model. The pattern is matched against
# full module names (peft's re.fullmatch), because short names such as "proj" or "linear_fc1" also
# hit the vision patch embedding and the mergers.
TEXT_LORA_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def _check_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not one of {sorted(allowed)}")


class Qwen3VLBackbone(nn.Module):
    """Qwen3-VL image embedder: `preprocess(images, texts)` then `forward(**inputs) -> [B, hidden_size]`.

    Args:
        name_or_path: hub id or local checkpoint directory (a directory needs no hub).
        revision: hub branch, tag or commit (ignored for a local directory).
        prompt: user text placed after the image (and the record's text) in the chat turn.
        text: the record's own text beside the image: "none", "caption" (its caption) or
            "text_input" (style, features, vibe and caption, without the label field).
        pooling: "mean" (masked mean of all real tokens), "last" (last real token, the native mode of
            Qwen3-VL-Embedding) or "vision" (mean over the image tokens only).
        layer: hidden layer to pool, Python-indexed over `hidden_states` (0 = embeddings,
            -1 = the last layer after the final norm).
        train: "frozen" (no gradients, always eval mode, runs under no_grad), "lora" (peft adapters
            on `lora_target_modules`), "vision" (the vision tower and its mergers) or "full".
        lora_r, lora_alpha, lora_dropout, lora_target_modules: the LoRA adapter (train="lora"); the
            targets are a regex on full module names.
        dtype: weights' dtype: "float32", "bfloat16" or "float16". Outputs are always float32.
        min_pixels, max_pixels: override the processor's pixel budget per image.
        attn_implementation: passed to `from_pretrained` ("sdpa", "eager", "flash_attention_2").
        gradient_checkpointing: recompute activations in backward (non-reentrant) when training.
        feature_cache: where feature extraction caches this backbone's features while frozen
            (`charfeat.features`); None turns the cache off.
        build_tiny: build a tiny random model at `name_or_path` first if nothing is there.
    """

    def __init__(
        self,
        name_or_path: str,
        revision: str | None = None,
        prompt: str = "Describe this person's appearance.",
        text: str = "none",
        pooling: str = "mean",
        layer: int = -1,
        train: str = "frozen",
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        lora_target_modules: str = TEXT_LORA_TARGETS,
        dtype: str = "float32",
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        attn_implementation: str | None = "sdpa",
        gradient_checkpointing: bool = False,
        feature_cache: str | None = None,
        build_tiny: bool = False,
    ):
        super().__init__()
        _check_choice("pooling", pooling, POOLINGS)
        _check_choice("train", train, TRAIN_MODES)
        _check_choice("text", text, TEXT_MODES)
        _check_choice("dtype", dtype, DTYPES)
        if pooling == "vision" and text != "none":
            raise ValueError(f"pooling='vision' with text={text!r}: image tokens come before the text and "
                             "attention is causal, so the text could never reach the pooled tokens")
        from transformers import AutoModel

        from charfeat.models.backbone.processor import Qwen3VLImageTextProcessor

        if build_tiny and not Path(name_or_path).exists():
            from charfeat.models.backbone.tiny import build_tiny_qwen3_vl

            build_tiny_qwen3_vl(name_or_path)

        self.name_or_path = str(name_or_path)
        self.revision = revision
        self.prompt = prompt
        self.text = text
        self.pooling = pooling
        self.layer = layer
        self.train_mode = train
        self.dtype_name = dtype
        self.attn_implementation = attn_implementation
        self.feature_cache_dir = feature_cache
        self.model = AutoModel.from_pretrained(
            self.name_or_path, revision=revision, dtype=DTYPES[dtype], attn_implementation=attn_implementation
        )
        self.processor = Qwen3VLImageTextProcessor.from_pretrained(self.name_or_path, revision=revision)
        self._set_pixel_budget(min_pixels, max_pixels)
        self.image_token_id = self.model.config.image_token_id
        num_layers = self.model.config.text_config.num_hidden_layers
        if not -(num_layers + 1) <= layer <= num_layers:
            raise ValueError(f"layer={layer} is outside [-{num_layers + 1}, {num_layers}] for this model")
        if text != "none":
            log.warning("backbone.text=%s: the record's own text goes beside every train and val image; "
                        "free text (captions) may name the label", text)

        self.model.requires_grad_(False)
        if train == "lora":
            self._add_lora(lora_r, lora_alpha, lora_dropout, lora_target_modules)
        elif train == "vision":
            self.model.visual.requires_grad_(True)
        elif train == "full":
            self.model.requires_grad_(True)
        if gradient_checkpointing and train != "frozen":
            # Reentrant checkpointing silently drops the vision-LoRA gradients (stack notes).
            self.model.activation_checkpointing_enable({"use_reentrant": False})
        if train == "frozen":
            self.model.eval()

    def _add_lora(self, r: int, alpha: int, dropout: float, target_modules: str) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        if r < 1 or alpha <= 0 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA needs lora_r >= 1, lora_alpha > 0, 0 <= lora_dropout < 1; got "
                             f"{r}, {alpha}, {dropout}")
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules)
        try:
            inject_adapter_in_model(config, self.model)
        except ValueError as err:  # peft: "Target modules ... not found in the base model"
            raise ValueError(f"lora_target_modules={target_modules!r} matches no module: {err}") from None
        for name, param in self.model.named_parameters():
            param.requires_grad_("lora_" in name)

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

    @property
    def pixel_budget(self) -> tuple[int, int]:
        size = self.processor.image_processor.size
        return int(size.shortest_edge), int(size.longest_edge)

    def train(self, mode: bool = True) -> "Qwen3VLBackbone":
        """A frozen backbone stays in eval mode even when a parent module calls `.train()`."""
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def chat_text(self, text: str | None = None) -> str:
        """The chat-template text for one user turn: [image, record text?, prompt], no generation prompt."""
        content = [{"type": "image"}]
        if text:
            content.append({"type": "text", "text": text + "\n"})
        content.append({"type": "text", "text": self.prompt})
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    def image_tokens(self, image) -> int:
        """LLM tokens an image becomes after resizing to the pixel budget (for length bucketing)."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        proc = self.processor.image_processor
        factor = proc.patch_size * proc.merge_size
        lo, hi = self.pixel_budget
        height, width = smart_resize(image.height, image.width, factor=factor, min_pixels=lo, max_pixels=hi)
        return (height // factor) * (width // factor)

    def sequence_length(self, image, text: str | None = None) -> int:
        """Tokens the image and record text add to the fixed prompt: what batches are sorted by."""
        extra = len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
        return self.image_tokens(image) + extra

    def preprocess(self, images: list, texts: list[str | None] | None = None) -> dict[str, torch.Tensor]:
        """PIL images (+ one record text each) -> model inputs (input_ids, attention_mask,
        mm_token_type_ids, pixel_values, image_grid_thw)."""
        if not images:
            raise ValueError("preprocess needs at least one image")
        if texts is None:
            texts = [None] * len(images)
        if len(texts) != len(images):
            raise ValueError(f"got {len(images)} images but {len(texts)} texts")
        batch = self.processor(
            images=[image.convert("RGB") for image in images],
            text=[self.chat_text(text) for text in texts],
            padding=True,
            return_tensors="pt",
        )
        return dict(batch)

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Model inputs from `preprocess` -> pooled float32 embeddings [B, hidden_size]."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            device = self.model.device
            inputs = {key: value.to(device) for key, value in inputs.items()}
            want_layer = self.layer != -1
            out = self.model(**inputs, use_cache=False, output_hidden_states=want_layer)
            hidden = out.hidden_states[self.layer] if want_layer else out.last_hidden_state
            mask = inputs["attention_mask"].bool()
            if self.pooling == "mean":
                pooled = masked_mean(hidden, mask)
            elif self.pooling == "last":
                pooled = last_token(hidden, mask)
            else:
                pooled = masked_mean(hidden, mask & (inputs["input_ids"] == self.image_token_id))
            return pooled.float()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the parameters that train (none when frozen, the adapter for LoRA): what a checkpoint stores."""
        return {name: param.detach().clone() for name, param in self.named_parameters() if param.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load what `trainable_state_dict` saved into a backbone built with the same config."""
        params = {name: param for name, param in self.named_parameters() if param.requires_grad}
        if set(state) != set(params):
            missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
            raise KeyError(f"trainable state does not fit this backbone (train={self.train_mode}): "
                           f"missing {missing[:5]}, unexpected {unexpected[:5]}")
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)

    def feature_fingerprint(self) -> dict:
        """Everything that changes a frozen feature: what a feature cache is keyed by."""
        import transformers

        from charfeat.models.backbone.revision import model_revision

        return {
            "model": self.name_or_path,
            "revision": model_revision(self.name_or_path, self.revision),
            "prompt": self.prompt,
            "text": self.text,
            "pixels": list(self.pixel_budget),
            "pooling": self.pooling,
            "layer": self.layer,
            "dtype": self.dtype_name,
            "attn_implementation": self.attn_implementation,
            "transformers": transformers.__version__,
        }
