"""``backbone.format=embedding``: Qwen3-VL-Embedding fed as its authors feed it; ``backbone.embed_dim``.

The published format (QwenLM/Qwen3-VL-Embedding, ``Qwen3VLEmbedder`` in
src/models/qwen3_vl_embedding.py): a system turn holding the instruction (default "Represent the
user's input.", given a final full stop when it ends without punctuation), a user turn with the image
and then the text, the chat template's generation prompt ``<|im_start|>assistant\\n``, and the last
token's hidden state, L2-normalised; Matryoshka-trained, so a prefix of it is an embedding too.
The sequences below are that conversation as Qwen3-VL's chat template renders it, written out.
"""

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from charfeat.config import BackboneConfig, backbone_problems, with_schema_defaults
from charfeat.errors import ConfigError
from configured import option, tiny_backbone

SYSTEM = "<|im_start|>system\nRepresent the user's input.<|im_end|>\n"
GENERATION_PROMPT = "<|im_start|>assistant\n"
IMAGE = "<|vision_start|>" + "<|image_pad|>" * 9 + "<|vision_end|>"  # a 96x96 image: 3x3 LLM tokens
TEXT = "Caption: a red coat."


@pytest.fixture(scope="module")
def embedding(tiny_path):
    return tiny_backbone(tiny_path, format="embedding", pooling="last")


def rows(batch) -> list[list[int]]:
    """Each row's token ids, padding left out."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]


def test_an_image_renders_the_published_template(embedding, make_image):
    assert embedding.chat_text() == (
        "<|im_start|>system\nRepresent the user's input.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    expected = SYSTEM + "<|im_start|>user\n" + IMAGE + "<|im_end|>\n" + GENERATION_PROMPT
    [ids] = rows(embedding.preprocess([make_image(96, 96, 0)]))
    tokenizer = embedding.processor.tokenizer
    assert tokenizer.decode(ids) == expected
    assert ids == tokenizer(expected, add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:2] == ["<|im_start|>", "s"] and tokens.count("<|image_pad|>") == 9
    assert tokens[-2:] == ["t", "Ċ"]  # ...assistant\n: the generation prompt's newline is the last token


def test_an_image_with_text_renders_the_published_template(embedding, make_image):
    assert embedding.chat_text(TEXT) == (
        "<|im_start|>system\nRepresent the user's input.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Caption: a red coat.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    image = make_image(96, 96, 0)
    batch = embedding.preprocess([image, image], [None, TEXT])  # padded: the image-only row is shorter
    alone, with_text = rows(batch)
    tokenizer = embedding.processor.tokenizer
    expected = SYSTEM + "<|im_start|>user\n" + IMAGE + TEXT + "<|im_end|>\n" + GENERATION_PROMPT
    assert tokenizer.decode(with_text) == expected
    assert with_text == tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert len(with_text) - len(alone) == len(TEXT)  # byte-level tiny tokenizer: one token per character


def test_the_feature_is_the_generation_prompts_last_token_l2_normalised(embedding, make_image):
    images = [make_image(96, 96, 0), make_image(64, 64, 1)]
    batch = embedding.preprocess(images, [None, TEXT])
    mask = batch["attention_mask"]
    assert not mask.all()  # one row is padded
    hidden = embedding.model(**batch, use_cache=False).last_hidden_state
    last = [int(row.nonzero().max()) for row in mask]
    tokenizer = embedding.processor.tokenizer
    for i, position in enumerate(last):
        assert tokenizer.decode(batch["input_ids"][i, :position + 1]).endswith(GENERATION_PROMPT)
    expected = F.normalize(torch.stack([hidden[i, position] for i, position in enumerate(last)]), dim=-1)
    features = embedding(**batch)
    torch.testing.assert_close(features, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(2))
    assert embedding.feature_dim == embedding.hidden_size == 128


def test_the_instruction_is_the_system_turn_and_the_prompt_is_unused(tiny_path):
    custom = tiny_backbone(tiny_path, format="embedding", instruction="  Represent the person's clothing style ",
                           prompt="Never rendered.")
    assert custom.chat_text() == (
        "<|im_start|>system\nRepresent the person's clothing style.<|im_end|>\n"  # stripped, "." added as Qwen does
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n"
    )
    assert tiny_backbone(tiny_path, format="embedding", instruction="What style is this?").encoder.instruction == \
        "What style is this?"  # ends in punctuation: kept
    with pytest.raises(ConfigError, match="backbone.instruction is empty"):
        tiny_backbone(tiny_path, format="embedding", instruction=" ")


def test_the_chat_format_is_unchanged(tiny_path):
    chat = tiny_backbone(tiny_path, instruction="Not rendered.")
    assert chat.chat_text(TEXT) == ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
                                    "Caption: a red coat.\nDescribe this person's appearance.<|im_end|>\n")
    assert not chat.normalized and chat.feature_dim == chat.hidden_size


@pytest.mark.parametrize("input_format", ["embedding", "chat"])
def test_embed_dim_keeps_the_first_values_then_normalises(tiny_path, mixed_images, input_format):
    backbone = tiny_backbone(tiny_path, format=input_format, pooling="last", embed_dim=32)
    assert not backbone.loaded  # a frozen backbone still reads its weights on first use
    assert (backbone.feature_dim, backbone.hidden_size) == (32, 128)
    batch = backbone.preprocess(mixed_images)
    pooled = backbone.pool(**batch)
    features = backbone(**batch)
    assert pooled.shape == (3, 128) and features.shape == (3, 32)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(features, F.normalize(pooled[:, :32], dim=-1), atol=0, rtol=0)


def test_an_embed_dim_wider_than_the_model_is_a_clear_error(tiny_path):
    with pytest.raises(ConfigError, match=r"backbone.embed_dim=129: must be in \[1, 128\], 128 being the hidden "
                                          r"size of .*tiny"):
        tiny_backbone(tiny_path, format="embedding", embed_dim=129)
    # and before anything is built, from the model's config.json
    node = OmegaConf.merge(OmegaConf.structured(BackboneConfig), option("backbone", "tiny"),
                           {"name_or_path": str(tiny_path), "embed_dim": 4096})
    assert [p for p in backbone_problems(node) if "embed_dim" in p] == [
        f"backbone.embed_dim=4096: must be in [1, 128], 128 being the hidden size of {tiny_path} "
        "(null: the whole feature)"]
    node.embed_dim = 128
    assert backbone_problems(node) == []


def test_a_backbone_config_saved_before_formats_existed_still_builds(tiny_path):
    """A checkpoint's backbone config without format, instruction and embed_dim gets their defaults."""
    from hydra.utils import instantiate

    values = {**option("backbone", "tiny"), "name_or_path": str(tiny_path), "feature_cache": None}
    saved = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(BackboneConfig), values), enum_to_str=True)
    for key in ("format", "instruction", "embed_dim"):
        del saved[key]
    backbone = instantiate(with_schema_defaults({"backbone": saved}, "backbone"))
    assert backbone.input_format == "chat" and backbone.feature_dim == backbone.hidden_size


def test_a_trainable_backbone_learns_through_the_cut(tiny_path, mixed_images):
    backbone = tiny_backbone(tiny_path, format="embedding", pooling="last", train="vision", embed_dim=16)
    backbone.train()
    features = backbone(**backbone.preprocess(mixed_images[:2]))
    assert features.shape == (2, 16) and features.grad_fn is not None
    (features @ torch.arange(16.0)).sum().backward()
    grad = backbone.model.visual.blocks[0].attn.qkv.weight.grad
    assert grad is not None and grad.abs().sum() > 0
