"""Qwen3-VL as a frozen or trainable image-embedding backbone.

One image (plus, optionally, the record's own text) goes through the chat template in one of two
formats (`backbone.format`): ``chat``, a user turn with a fixed prompt after the image, or
``embedding``, Qwen3-VL-Embedding's own (an instruction in the system turn, then the generation
prompt); one hidden layer of the language model is pooled into one vector per image. The model
is loaded as `Qwen3VLModel` (AutoModel), which has no LM head, so vocabulary logits are never
computed. Pooling always honours the attention mask, so an image's embedding does not depend on
the other images in its batch, their sizes or the length of their texts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from charfeat.config import (AttnImplementation, Dtype, InputFormat, Pooling, RandomModel, TextMode, TrainMode,
                             embed_dim_problem, float16_training_problem, instruction_problem)
from charfeat.errors import ConfigError
from charfeat.models.backbone.encoder import InputEncoder
from charfeat.models.backbone.pooling import last_token, masked_mean

log = logging.getLogger(__name__)

# The version of what charfeat computes as a frozen feature: the chat template, the processor settings,
# image decoding, pooling and its precision. Any change to them must bump it: the feature cache is keyed
# by it, so features computed by the old code are never reused (tests/features/test_feature_version.py
# fails when the feature of a fixed input changes while this stays the same).
FEATURE_VERSION = 2  # 2: pooling accumulates in float32 and masks padding with masked_fill


class Qwen3VLBackbone(nn.Module):
    """Qwen3-VL image embedder: `preprocess(images, texts)` then `forward(**inputs) -> [B, feature_dim]`.

    `forward` is `pool` (the pooled hidden states [B, hidden_size]: what the feature cache holds)
    then `finish` (the Matryoshka cut to ``embed_dim`` and the L2 normalisation, if any).

    The arguments are the keys of the ``backbone`` config group, stated with their defaults and
    meanings in ``charfeat.config.BackboneConfig``. A frozen backbone gets no gradients, stays in
    eval mode and runs under no_grad; embeddings are float32 whatever the weights' dtype. Trainable
    parameters are float32 whatever ``dtype`` is (the frozen rest keeps it): an optimizer that
    updates bfloat16 weights in place loses most small updates; the forward runs under the
    trainer's autocast.
    """

    def __init__(
        self,
        name_or_path: str,
        revision: str | None,
        format: InputFormat,  # noqa: A002 - the config key's name
        prompt: str,
        instruction: str,
        text: TextMode,
        pooling: Pooling,
        layer: int,
        embed_dim: int | None,
        train: TrainMode,
        lora_r: int,
        lora_alpha: int,
        lora_dropout: float,
        lora_target_modules: str,
        dtype: Dtype,
        min_pixels: int | None,
        max_pixels: int | None,
        attn_implementation: AttnImplementation | None,
        gradient_checkpointing: bool,
        feature_cache: str | None,
        max_tokens_per_batch: int | None,
        build_random: RandomModel | None,
    ):
        super().__init__()
        if pooling == Pooling.vision and text != TextMode.none:
            raise ValueError(f"pooling=vision with text={text}: image tokens come before the text and "
                             "attention is causal, so the text could never reach the pooled tokens")
        if problem := float16_training_problem(dtype, train) or instruction_problem(format, instruction):
            raise ConfigError(problem)
        from charfeat.models.backbone.hub import local_snapshot

        if build_random is not None and not Path(name_or_path).exists():
            from charfeat.models.backbone.tiny import build_random_qwen3_vl

            build_random_qwen3_vl(name_or_path, str(build_random))
        files = local_snapshot(str(name_or_path), revision)  # a directory; a hub model out of reach fails in seconds
        from transformers import AutoConfig

        self.name_or_path = str(name_or_path)
        self.revision = revision
        self.input_format = format
        self.text = text
        self.pooling = pooling
        self.layer = layer
        self.train_mode = train
        self.dtype_name = dtype
        self.attn_implementation = attn_implementation
        self.feature_cache_dir = feature_cache
        self.config = AutoConfig.from_pretrained(files, revision=revision)
        self.encoder = InputEncoder(files, revision, format, prompt, instruction, min_pixels, max_pixels)
        self.max_tokens_per_batch = max_tokens_per_batch
        self.image_token_id = self.config.image_token_id
        num_layers = self.config.text_config.num_hidden_layers
        if not -(num_layers + 1) <= layer <= num_layers:
            raise ValueError(f"layer={layer} is outside [-{num_layers + 1}, {num_layers}] for this model")
        if problem := embed_dim_problem(embed_dim, self.hidden_size, self.name_or_path):
            raise ConfigError(problem)
        self.embed_dim = embed_dim
        if text != TextMode.none:
            log.warning("backbone.text=%s: the record's own text goes beside every train and val image; "
                        "free text (captions) may name the label", text)
        self._device: torch.device | None = None  # where .to() put the backbone: the weights go there when loaded
        self._unloaded = (files, (lora_r, lora_alpha, lora_dropout, lora_target_modules, gradient_checkpointing))
        if not self.frozen:  # its parameters go to the optimizer now
            self._load_model()

    def _load_model(self) -> None:
        """Read the weights (a frozen backbone's on first use: a run whose features are all cached,
        such as a sweep's later jobs, never reads a multi-GB checkpoint)."""
        from transformers import AutoModel

        files, trainable = self.__dict__.pop("_unloaded")
        if self.frozen:
            log.info("backbone: loading the weights of %s (features to compute)", self.name_or_path)
        self.model = AutoModel.from_pretrained(
            files, revision=self.revision, dtype=getattr(torch, self.dtype_name),
            attn_implementation=None if self.attn_implementation is None else str(self.attn_implementation),
        )
        self._set_trainable(*trainable)
        if self._device is not None:
            self.model.to(self._device)

    def __getattr__(self, name: str):
        if name == "model" and "_unloaded" in self.__dict__:
            self._load_model()
        return super().__getattr__(name)

    def to(self, *args, **kwargs) -> "Qwen3VLBackbone":
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None:
            self._device = device
        return super().to(*args, **kwargs)

    def _set_trainable(self, lora_r: int, lora_alpha: int, lora_dropout: float, lora_target_modules: str,
                       gradient_checkpointing: bool) -> None:
        """Exactly the parameters of ``train_mode`` require gradients, in float32; a frozen model stays in eval mode."""
        train = self.train_mode
        self.model.requires_grad_(False)
        if train == TrainMode.lora:
            self._add_lora(lora_r, lora_alpha, lora_dropout, lora_target_modules)
        elif train == TrainMode.vision:
            self.model.visual.requires_grad_(True)
        elif train == TrainMode.full:
            self.model.requires_grad_(True)
        if gradient_checkpointing and train != TrainMode.frozen:
            # Reentrant checkpointing silently drops every vision-LoRA gradient: non-reentrant only.
            self.model.activation_checkpointing_enable({"use_reentrant": False})
        if train == TrainMode.frozen:
            self.model.eval()
        for param in self.model.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()  # master weights: AdamW steps of 1e-5 vanish in bfloat16

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

    @property
    def hidden_size(self) -> int:
        """Width of the pooled features (`pool`, the feature cache): the text model's hidden size."""
        return self.config.text_config.hidden_size

    @property
    def feature_dim(self) -> int:
        """Width of the features (`forward`, `finish`) that a head takes: ``embed_dim``, else the hidden size."""
        return self.hidden_size if self.embed_dim is None else self.embed_dim

    @property
    def normalized(self) -> bool:
        """Whether `finish` L2-normalises: with a Matryoshka cut, and in Qwen3-VL-Embedding's own format,
        whose published embedding is unit length."""
        return self.embed_dim is not None or self.input_format == InputFormat.embedding

    @property
    def loaded(self) -> bool:
        return "_unloaded" not in self.__dict__

    @property
    def frozen(self) -> bool:
        return self.train_mode == TrainMode.frozen

    def train(self, mode: bool = True) -> "Qwen3VLBackbone":
        """A frozen backbone stays in eval mode even when a parent module calls `.train()`."""
        super().train(mode)
        if self.frozen and self.loaded:
            self.model.eval()
        return self

    @property
    def processor(self):
        return self.encoder.processor

    @property
    def pixel_budget(self) -> tuple[int, int]:
        return self.encoder.pixel_budget

    def chat_text(self, text: str | None = None) -> str:
        return self.encoder.chat_text(text)

    def sequence_length(self, image, text: str | None = None) -> int:
        return self.encoder.sequence_length(image, text)

    def preprocess(self, images: list, texts: list[str | None] | None = None) -> dict[str, torch.Tensor]:
        return self.encoder.preprocess(images, texts)

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Model inputs from `preprocess` -> float32 features [B, feature_dim] (`pool`, then `finish`)."""
        return self.finish(self.pool(**inputs))

    def finish(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, hidden_size] -> the features a head takes [B, feature_dim]: the first
        ``embed_dim`` values (Matryoshka), L2-normalised when `normalized`; else unchanged.

        Cheap, and applied after the feature cache (which holds `pool`'s output), so one extraction
        serves every ``embed_dim``."""
        if self.embed_dim is not None:
            pooled = pooled[..., :self.embed_dim]
        return F.normalize(pooled, dim=-1) if self.normalized else pooled

    def pool(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Model inputs from `preprocess` -> pooled float32 hidden states [B, hidden_size]."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            device = self.model.device
            inputs = {key: value.to(device) for key, value in inputs.items()}
            want_layer = self.layer != -1
            out = self.model(**inputs, use_cache=False, output_hidden_states=want_layer)
            hidden = out.hidden_states[self.layer] if want_layer else out.last_hidden_state
            mask = inputs["attention_mask"].bool()
            if self.pooling == Pooling.mean:
                return masked_mean(hidden, mask)
            if self.pooling == Pooling.last:
                return last_token(hidden, mask)
            image_mask = mask & (inputs["input_ids"] == self.image_token_id)
            if not image_mask.any(dim=1).all():
                rows = (~image_mask.any(dim=1)).nonzero().flatten().tolist()
                raise ValueError(f"pooling=vision: input row(s) {rows} have no image tokens to pool")
            return masked_mean(hidden, image_mask)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the parameters that train (none when frozen, the adapter for LoRA): what a checkpoint stores.

        Copies on the CPU: a GPU model is never cloned on the GPU to be saved."""
        return {name: param.detach().to("cpu", copy=True) for name, param in self.named_parameters()
                if param.requires_grad}

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
        """Everything that changes a frozen pooled feature (`pool`): what a feature cache is keyed by.

        The input format's own text: ``prompt`` for chat (the key as it was before formats existed, so
        features cached then stay valid), ``format`` and the ``instruction`` as rendered for embedding.
        ``embed_dim`` is not in it: the cache holds pooled features, cut and normalised by `finish` as
        they are used."""
        import transformers

        from charfeat.models.backbone.revision import model_revision

        if self.input_format == InputFormat.embedding:
            template = {"format": str(self.input_format), "instruction": self.encoder.instruction}
        else:
            template = {"prompt": self.encoder.prompt}
        return {
            "feature_code": FEATURE_VERSION,
            "torch": torch.__version__,
            "model": self.name_or_path,
            "revision": model_revision(self.name_or_path, self.revision),
            **template,
            "text": self.text,
            "pixels": list(self.pixel_budget),
            "pooling": self.pooling,
            "layer": self.layer,
            "dtype": self.dtype_name,
            "attn_implementation": self.attn_implementation,
            "transformers": transformers.__version__,
        }
