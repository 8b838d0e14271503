import os

import pytest
import torch

from charfeat.models.backbone.tiny import TINY_MAX_PIXELS, build_tiny_qwen3_vl
from configured import tiny_backbone


def test_tiny_loads_through_the_real_path(tiny_path):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_path)
    assert type(model).__name__ == "Qwen3VLModel"
    assert model.config.text_config.hidden_size == 128
    total = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < total < 2e6
    size_on_disk = sum(f.stat().st_size for f in tiny_path.iterdir())
    assert size_on_disk < 8 * 2**20


def test_build_reuses_an_existing_directory(tiny_path):
    weights = tiny_path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert build_tiny_qwen3_vl(tiny_path) == tiny_path
    assert weights.stat().st_mtime_ns == before


def test_build_is_deterministic_and_leaves_no_staging_dirs(tmp_path):
    from safetensors.torch import load_file

    a = build_tiny_qwen3_vl(tmp_path / "a")
    b = build_tiny_qwen3_vl(tmp_path / "b")
    weights_a, weights_b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_build_keeps_the_winner_of_a_race(tmp_path, monkeypatch):
    import charfeat.models.backbone.tiny as tiny

    target = tmp_path / "tiny"
    real_rename = os.rename

    def rename_after_another_process(src, dst):
        os.makedirs(dst)
        (target / "theirs.txt").write_text("winner")
        real_rename(src, dst)  # raises: dst now exists and is not empty

    monkeypatch.setattr(tiny.os, "rename", rename_after_another_process)
    assert build_tiny_qwen3_vl(target) == target
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_build_random_builds_a_missing_model(tmp_path, mixed_images):
    path = tmp_path / "cache" / "models" / "tiny-qwen3-vl"
    backbone = tiny_backbone(path, build_random="tiny")
    assert (path / "model.safetensors").exists()
    assert backbone.processor.image_processor.size.longest_edge == TINY_MAX_PIXELS


def test_save_and_reload_give_identical_embeddings(tiny_path, tmp_path, mixed_images):
    first = tiny_backbone(tiny_path)
    first.model.save_pretrained(tmp_path / "copy")
    first.processor.save_pretrained(tmp_path / "copy")
    second = tiny_backbone(tmp_path / "copy")
    inputs = first.preprocess(mixed_images)
    assert torch.equal(first(**inputs), second(**second.preprocess(mixed_images)))


@pytest.mark.slow
def test_backbone_small_is_built_on_first_use_with_20m_parameters(tmp_path):
    """backbone=small: built like tiny, ~20 M parameters, every image about 224 x 224 (49 LLM tokens)."""
    from PIL import Image

    from charfeat.config import BackboneConfig, build

    backbone = build(BackboneConfig, name_or_path=str(tmp_path / "small"), build_random="small", dtype="float32",
                     max_pixels=None, feature_cache=None)
    assert 15e6 < sum(p.numel() for p in backbone.model.parameters()) < 25e6
    assert backbone.encoder.image_tokens(Image.new("RGB", (96, 96))) == 49
    assert backbone.encoder.image_tokens(Image.new("RGB", (640, 480))) in (48, 49, 50)
