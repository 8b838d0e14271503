"""An image's embedding is the same alone and inside any batch (fp32, allclose)."""

import pytest
import torch

from configured import tiny_backbone

TEXTS = [None, "Caption: a short one.", "Features: long hair, glasses, hat, beard. Caption: a much longer caption "
         "that makes this prompt many tokens longer than the others in the batch."]


@pytest.fixture(scope="module")
def backbones(tiny_path):
    """One backbone per (pooling, text) pair; vision pooling takes no text (it could never see it)."""
    return {
        ("mean", "caption"): tiny_backbone(tiny_path, pooling="mean", text="caption"),
        ("last", "caption"): tiny_backbone(tiny_path, pooling="last", text="caption"),
        ("vision", "none"): tiny_backbone(tiny_path, pooling="vision"),
        ("mean", "none@layer1"): tiny_backbone(tiny_path, pooling="mean", layer=1),
    }


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("case", [("mean", "caption"), ("last", "caption"), ("vision", "none"),
                                  ("mean", "none@layer1")], ids="-".join)
def test_alone_equals_in_batch_with_other_sizes_and_prompt_lengths(backbones, mixed_images, case, padding_side):
    backbone = backbones[case]
    texts = TEXTS if backbone.text != "none" else None
    backbone.processor.tokenizer.padding_side = padding_side
    try:
        batch = backbone.preprocess(mixed_images, texts)
        lengths = batch["attention_mask"].sum(dim=1)
        assert len(set(lengths.tolist())) == 3  # every row has its own length: real padding
        together = backbone(**batch)
        alone = torch.cat([backbone(**backbone.preprocess([image], None if texts is None else [text]))
                           for image, text in zip(mixed_images, TEXTS)])
        reversed_batch = backbone(**backbone.preprocess(mixed_images[::-1], None if texts is None else texts[::-1]))
    finally:
        backbone.processor.tokenizer.padding_side = "right"
    assert together.dtype == torch.float32 and together.shape == (3, backbone.hidden_size)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reversed_batch.flip(0), alone, atol=1e-5, rtol=1e-5)


def test_text_changes_the_embedding_except_under_vision_pooling(backbones, mixed_images):
    backbone = backbones[("mean", "caption")]
    with_text = backbone(**backbone.preprocess(mixed_images[:1], ["Caption: red dress."]))
    without = backbone(**backbone.preprocess(mixed_images[:1], [None]))
    assert not torch.allclose(with_text, without)


def test_vision_pooling_rejects_text(tiny_path):
    with pytest.raises(ValueError, match="vision"):
        tiny_backbone(tiny_path, pooling="vision", text="caption")


def test_layer_picks_that_hidden_state(backbones, mixed_images):
    backbone = backbones[("mean", "none@layer1")]
    batch = backbone.preprocess(mixed_images)
    hidden = backbone.model(**batch, use_cache=False, output_hidden_states=True).hidden_states
    assert len(hidden) == backbone.model.config.text_config.num_hidden_layers + 1
    mask = batch["attention_mask"].bool().unsqueeze(-1)
    expected = (hidden[1] * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(backbone(**batch), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("layer", [3, -4])
def test_layer_out_of_range_names_the_key(tiny_path, layer):
    with pytest.raises(ValueError, match="layer"):
        tiny_backbone(tiny_path, layer=layer)
