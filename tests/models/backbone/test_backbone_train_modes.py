"""Each train mode gives gradients to exactly its parameters; checkpoints hold only those."""

import pytest
import torch

from charfeat.config import HeadConfig, build
from configured import tiny_backbone

VISION_AND_TEXT_LORA = (r".*(language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
                        r"|visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.linear_fc(1|2)))")


def intended(name: str, mode: str) -> bool:
    if mode == "lora":
        return ".lora_" in name
    if mode == "vision":
        return name.startswith("model.visual.")
    return mode == "full"


def train_steps(backbone, head, images, steps=2):
    params = [p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=0.05, weight_decay=0.1)
    backbone.train()
    head.train()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        head(backbone(**backbone.preprocess(images))).sum().backward()
        optimizer.step()


@pytest.mark.parametrize("mode", ["frozen", "lora", "vision", "full"])
def test_exactly_the_intended_parameters_train(tiny_path, mixed_images, mode):
    torch.manual_seed(0)
    backbone = tiny_backbone(tiny_path, train=mode)
    head = build(HeadConfig, out_dim=8, hidden_dim=None)(in_dim=backbone.hidden_size)
    backbone.model  # noqa: B018 -- a frozen backbone reads its weights on first use: here, to compare them after
    before = {name: p.detach().clone() for name, p in backbone.named_parameters()}
    trainable = {name for name, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {name for name in before if intended(name, mode)}
    assert (len(trainable) > 0) is (mode != "frozen")

    train_steps(backbone, head, mixed_images)
    for name, p in backbone.named_parameters():
        if name in trainable:
            assert p.grad is not None, name
        else:
            assert p.grad is None and torch.equal(p, before[name]), name  # bit-identical
    changed = {name for name, p in backbone.named_parameters() if not torch.equal(p, before[name])}
    if mode == "lora":  # B starts at zero, so A only moves from the second step
        assert {n for n in trainable if ".lora_B." in n} <= changed
    elif mode != "frozen":
        assert len(changed) > len(trainable) // 2
    assert set(backbone.trainable_state_dict()) == trainable


def test_lora_regex_reaches_vision_blocks_only_where_asked(tiny_path):
    text_only = tiny_backbone(tiny_path, train="lora")
    names = [n for n, p in text_only.named_parameters() if p.requires_grad]
    assert names and all(".language_model.layers." in n for n in names)
    both = tiny_backbone(tiny_path, train="lora", lora_r=4, lora_target_modules=VISION_AND_TEXT_LORA)
    names = [n for n, p in both.named_parameters() if p.requires_grad]
    assert any(".visual.blocks." in n for n in names)
    assert not any("patch_embed" in n or "merger" in n for n in names)
    with pytest.raises(ValueError, match="lora_target_modules"):
        tiny_backbone(tiny_path, train="lora", lora_target_modules=r"nothing\.here")


def test_gradient_checkpointing_keeps_vision_lora_gradients(tiny_path, mixed_images):
    backbone = tiny_backbone(tiny_path, train="lora", lora_r=4, lora_target_modules=VISION_AND_TEXT_LORA,
                               gradient_checkpointing=True)
    head = build(HeadConfig, out_dim=8, hidden_dim=None)(in_dim=backbone.hidden_size)
    train_steps(backbone, head, mixed_images)
    grads = {n: p.grad for n, p in backbone.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    assert any(".visual.blocks." in n and ".lora_B." in n and g.abs().sum() > 0 for n, g in grads.items())


def test_lora_adapter_and_head_save_and_load_reproduce_embeddings(tiny_path, tmp_path, mixed_images):
    torch.manual_seed(0)
    backbone = tiny_backbone(tiny_path, train="lora", lora_r=4, lora_dropout=0.1)
    head = build(HeadConfig, out_dim=8)(in_dim=backbone.hidden_size)
    train_steps(backbone, head, mixed_images, steps=3)
    checkpoint = tmp_path / "last.pt"
    torch.save({"head": head.state_dict(), "backbone_trainable": backbone.trainable_state_dict()}, checkpoint)
    state = torch.load(checkpoint)
    assert all(".lora_" in name for name in state["backbone_trainable"])  # no frozen weights stored
    adapter_bytes = sum(t.numel() * t.element_size() for t in state["backbone_trainable"].values())
    model_bytes = sum(p.numel() * p.element_size() for p in backbone.parameters() if not p.requires_grad)
    assert adapter_bytes < model_bytes / 4

    backbone.eval()
    head.eval()
    with torch.no_grad():
        expected = head(backbone(**backbone.preprocess(mixed_images)))

    reloaded = tiny_backbone(tiny_path, train="lora", lora_r=4, lora_dropout=0.1)
    fresh = reloaded(**reloaded.preprocess(mixed_images))
    reloaded.load_trainable_state_dict(state["backbone_trainable"])
    reloaded_head = build(HeadConfig, out_dim=8)(in_dim=reloaded.hidden_size)
    reloaded_head.load_state_dict(state["head"])
    reloaded.eval()
    reloaded_head.eval()
    with torch.no_grad():
        got = head(reloaded(**reloaded.preprocess(mixed_images)))
        got_with_reloaded_head = reloaded_head(reloaded(**reloaded.preprocess(mixed_images)))
    assert torch.equal(got, expected) and torch.equal(got_with_reloaded_head, expected)
    assert not torch.equal(fresh, backbone(**backbone.preprocess(mixed_images)))  # training changed it


def test_loading_a_state_of_another_mode_fails(tiny_path):
    lora = tiny_backbone(tiny_path, train="lora", lora_r=4)
    vision = tiny_backbone(tiny_path, train="vision")
    with pytest.raises(KeyError, match="train=vision"):
        vision.load_trainable_state_dict(lora.trainable_state_dict())
