import pytest
import torch

from charfeat.models.backbone.pooling import masked_mean
from configured import tiny_backbone


@pytest.fixture(scope="module")
def frozen(tiny_path):
    return tiny_backbone(tiny_path)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("pooling", ["mean", "last", "vision"])
def test_embedding_does_not_depend_on_batch_padding(tiny_path, mixed_images, pooling, padding_side):
    backbone = tiny_backbone(tiny_path, pooling=pooling)
    backbone.processor.tokenizer.padding_side = padding_side
    batch = backbone.preprocess(mixed_images)
    lengths = batch["attention_mask"].sum(dim=1)
    assert lengths.min() < lengths.max()  # the batch really is padded
    together = backbone(**batch)
    alone = torch.cat([backbone(**backbone.preprocess([image])) for image in mixed_images])
    assert together.shape == (3, backbone.hidden_size)
    assert together.dtype == torch.float32
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_pooling_modes_differ(tiny_path, mixed_images):
    outputs = {}
    for pooling in ("mean", "last", "vision"):
        backbone = tiny_backbone(tiny_path, pooling=pooling)
        outputs[pooling] = backbone(**backbone.preprocess(mixed_images))
    assert not torch.allclose(outputs["mean"], outputs["last"])
    assert not torch.allclose(outputs["mean"], outputs["vision"])


def test_mean_pooling_ignores_padding(frozen, mixed_images):
    batch = frozen.preprocess(mixed_images)
    mask = batch["attention_mask"].bool()
    hidden = frozen.model(**batch, use_cache=False).last_hidden_state
    pooled = frozen(**batch)
    torch.testing.assert_close(pooled, masked_mean(hidden, mask), atol=0, rtol=0)
    naive = hidden.mean(dim=1)
    padded = ~mask.all(dim=1)
    assert padded.any() and (~padded).any()
    torch.testing.assert_close(naive[~padded], pooled[~padded], atol=1e-6, rtol=0)
    assert (naive[padded] - pooled[padded]).abs().amax() > 1e-3


def test_vision_pooling_uses_only_image_tokens(frozen, mixed_images):
    batch = frozen.preprocess(mixed_images)
    frozen.pooling = "vision"
    try:
        pooled = frozen(**batch)
    finally:
        frozen.pooling = "mean"
    hidden = frozen.model(**batch, use_cache=False).last_hidden_state
    image_tokens = batch["input_ids"] == frozen.model.config.image_token_id
    assert image_tokens.sum(dim=1).tolist() == [9, 4, 12]  # 96x96, 64x64, 128x96 at 32 px per token
    expected = torch.stack([hidden[i][image_tokens[i]].mean(dim=0) for i in range(len(mixed_images))])
    torch.testing.assert_close(pooled, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("key", "value"), [("pooling", "cls"), ("train", "qlora"), ("dtype", "float64"), ("text", "ocr")]
)
def test_invalid_choices_raise_naming_allowed_values(tiny_path, key, value):
    with pytest.raises(ValueError, match=key) as error:
        tiny_backbone(tiny_path, **{key: value})
    assert value in str(error.value)
    allowed = {"pooling": "mean", "train": "frozen", "dtype": "float32", "text": "caption"}[key]
    assert allowed in str(error.value)


def test_pixel_budget_override(tiny_path, make_image):
    backbone = tiny_backbone(tiny_path, min_pixels=32 * 32, max_pixels=64 * 64)
    batch = backbone.preprocess([make_image(96, 96, 0)])
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4]]  # 64x64 after resize: 4 LLM tokens
    with pytest.raises(ValueError, match="min_pixels"):
        tiny_backbone(tiny_path, min_pixels=128 * 128, max_pixels=64 * 64)


def test_preprocess_renders_one_user_turn(frozen, make_image):
    text = frozen.chat_text()
    assert text == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "Describe this person's appearance.<|im_end|>\n"
    )
    batch = frozen.preprocess([make_image(96, 96, 3).convert("L")])  # grey image: converted to RGB
    assert {"input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw"} <= set(batch)
    assert batch["pixel_values"].shape[-1] == 3 * 2 * 16 * 16


def test_no_vocabulary_logits(frozen, mixed_images):
    assert not hasattr(frozen.model, "lm_head")
    vocab_size = frozen.model.config.text_config.vocab_size
    widths = []
    hooks = [m.register_forward_hook(lambda m, i, o: widths.append(o.shape[-1]) if torch.is_tensor(o) else None)
             for m in frozen.model.modules()]
    try:
        frozen(**frozen.preprocess(mixed_images))
    finally:
        for hook in hooks:
            hook.remove()
    assert widths and vocab_size not in widths


def test_frozen_backbone_gets_no_gradients(tiny_path, mixed_images):
    backbone = tiny_backbone(tiny_path, train="frozen")
    head = torch.nn.Linear(backbone.hidden_size, 8)
    parent = torch.nn.ModuleDict({"backbone": backbone, "head": head})
    parent.train()
    assert not backbone.model.training and head.training
    assert not any(p.requires_grad for p in backbone.parameters())
    assert backbone.trainable_state_dict() == {}

    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    optimizer = torch.optim.AdamW(parent.parameters(), lr=0.1, weight_decay=0.1)
    features = backbone(**backbone.preprocess(mixed_images))
    assert features.grad_fn is None and not features.requires_grad
    head(features).pow(2).sum().backward()
    optimizer.step()
    assert head.weight.grad is not None
    after = backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_full_training_reaches_vision_and_text_layers(tiny_path, mixed_images):
    backbone = tiny_backbone(tiny_path, train="full")
    backbone.train()
    assert backbone.model.training
    features = backbone(**backbone.preprocess(mixed_images))
    assert features.grad_fn is not None
    features.pow(2).sum().backward()
    visual = backbone.model.visual.blocks[0].attn.qkv.weight.grad
    text = backbone.model.language_model.layers[0].self_attn.q_proj.weight.grad
    assert visual is not None and visual.abs().sum() > 0
    assert text is not None and text.abs().sum() > 0
    state = backbone.trainable_state_dict()
    assert len(state) == len(list(backbone.parameters()))
    assert all(not t.requires_grad for t in state.values())


def test_half_precision_weights_give_float32_embeddings(tiny_path, mixed_images):
    backbone = tiny_backbone(tiny_path, dtype="bfloat16")
    assert backbone.model.dtype == torch.bfloat16
    out = backbone(**backbone.preprocess(mixed_images[:1]))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
