"""bf16 weights on the real path: pooling accumulates in float32 and never lets padding in (not even a
NaN); trainable parameters are float32 master weights, so small AdamW steps are not lost."""

import pytest
import torch

from charfeat.errors import ConfigError
from charfeat.models.backbone.pooling import last_token, masked_mean
from configured import tiny_backbone


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """bfloat16 hidden states [3, 40, 16] with a large common offset (as mean-pooled features have);
    row 0 padded on the left, row 1 on the right, row 2 not at all."""
    hidden = (100 + torch.randn(3, 40, 16, generator=torch.Generator().manual_seed(0))).to(torch.bfloat16)
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[0, :15] = False
    mask[1, 31:] = False
    return hidden, mask


def test_masked_mean_of_bf16_equals_the_fp32_accumulated_mean():
    hidden, mask = padded_batch()
    pooled = masked_mean(hidden, mask)
    reference = torch.stack([hidden[row][mask[row]].double().mean(dim=0) for row in range(3)]).float()
    assert pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, reference, rtol=1e-6, atol=0)  # bf16 rounding of the mean would be ~1e-3


def test_a_nan_at_a_padded_position_does_not_reach_the_pooled_vector():
    hidden, mask = padded_batch()
    clean = masked_mean(hidden, mask)
    hidden[~mask] = float("nan")
    pooled = masked_mean(hidden, mask)
    assert torch.isfinite(pooled).all()
    assert torch.equal(pooled, clean)
    assert torch.isfinite(last_token(hidden, mask)).all() and last_token(hidden, mask).dtype == torch.float32


def test_a_row_with_nothing_to_pool_is_an_error_not_a_zero_vector():
    hidden, mask = padded_batch()
    mask[1] = False
    with pytest.raises(ValueError, match=r"row\(s\) \[1\] have no position to pool"):
        masked_mean(hidden, mask)


def test_vision_pooling_of_an_input_without_image_tokens_is_an_error(tiny_path):
    backbone = tiny_backbone(tiny_path, pooling="vision")
    inputs = dict(backbone.processor(text=["no image here"], return_tensors="pt"))
    with pytest.raises(ValueError, match=r"pooling=vision: input row\(s\) \[0\] have no image tokens"):
        backbone(**inputs)


def nan_at_padding(backbone, mask):
    """A hook that puts NaN at every padded position of the final hidden states."""
    def hook(module, args, output):
        return output.masked_fill(~mask.bool().unsqueeze(-1), float("nan"))
    return backbone.model.language_model.norm.register_forward_hook(hook)


def test_bf16_feature_with_padding_around_it_equals_the_fp32_accumulated_reference(tiny_path, mixed_images):
    backbone = tiny_backbone(tiny_path, dtype="bfloat16")
    small, large = mixed_images[1], mixed_images[2]  # 64x64 and 128x96: the small one is padded
    alone = backbone.preprocess([small])
    with torch.no_grad():
        hidden = backbone.model(**alone, use_cache=False).last_hidden_state[0]
    reference = hidden[alone["attention_mask"][0].bool()].double().mean(dim=0).float()
    torch.testing.assert_close(backbone(**alone)[0], reference, rtol=1e-6, atol=1e-6)

    batch = backbone.preprocess([small, large])
    assert (batch["attention_mask"][0] == 0).any()
    handle = nan_at_padding(backbone, batch["attention_mask"])
    try:
        in_batch = backbone(**batch)[0]
    finally:
        handle.remove()
    assert torch.isfinite(in_batch).all()
    torch.testing.assert_close(in_batch, reference, rtol=1.6e-2, atol=1e-2)  # bf16 tolerance: another batch shape


def moved_weights(backbone, images, autocast: bool, steps: int = 3, lr: float = 1e-5) -> torch.Tensor:
    """Which trainable weights (flattened, in order) ``steps`` AdamW steps at ``lr`` changed."""
    params = [p for p in backbone.parameters() if p.requires_grad]
    before = [p.detach().float().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=lr)
    inputs = backbone.preprocess(images)
    backbone.train()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            features = backbone(**inputs)
        (features - features.mean(dim=0)).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return torch.cat([(p.detach().float() != b).flatten() for p, b in zip(params, before)])


def test_bf16_full_training_moves_the_weights_fp32_training_moves(tiny_path, mixed_images):
    images = mixed_images[:2]
    fp32 = moved_weights(tiny_backbone(tiny_path, train="full"), images, autocast=False)
    bf16_backbone = tiny_backbone(tiny_path, train="full", dtype="bfloat16")
    bf16 = moved_weights(bf16_backbone, images, autocast=True)
    assert fp32.sum() > 0.5 * fp32.numel()
    assert (bf16 & fp32).sum() >= 0.99 * fp32.sum(), f"{(bf16 & fp32).sum() / fp32.sum():.3f} of fp32's moves"
    assert all(p.dtype == torch.float32 for p in bf16_backbone.parameters())  # master weights


def test_bf16_vision_training_keeps_the_frozen_rest_in_bf16(tiny_path, mixed_images):
    backbone = tiny_backbone(tiny_path, train="vision", dtype="bfloat16")
    dtypes = {name.startswith("model.visual."): p.dtype for name, p in backbone.named_parameters()}
    assert dtypes == {True: torch.float32, False: torch.bfloat16}
    features = backbone.train()(**backbone.preprocess(mixed_images[:1]))  # no autocast: fp32 tower, bf16 text model
    features.sum().backward()
    assert backbone.model.visual.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_lora_adapters_train_in_fp32_over_bf16_weights(tiny_path):
    backbone = tiny_backbone(tiny_path, train="lora", dtype="bfloat16")
    dtypes = {(".lora_" in name): p.dtype for name, p in backbone.named_parameters()}
    assert dtypes == {True: torch.float32, False: torch.bfloat16}


def test_float16_training_is_refused():
    with pytest.raises(ConfigError, match="float16 training needs loss scaling"):
        tiny_backbone("/nonexistent", train="full", dtype="float16")
