"""Shared fixtures: one tiny Qwen3-VL per test session, built into a temp dir."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

# The tiny model's matmuls are too small to split: on a busy 2-core machine two threads run the
# backbone tests up to 15x slower than one.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory):
    from charfeat.models.backbone.tiny import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(tmp_path_factory.mktemp("models") / "tiny-qwen3-vl")


def random_image(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="session")
def mixed_images():
    """Images of different sizes, so a batch of them needs padding."""
    return [random_image(96, 96, 0), random_image(64, 64, 1), random_image(128, 96, 2)]


@pytest.fixture(scope="session")
def make_image():
    """`make_image(width, height, seed)` -> a random RGB PIL image."""
    return random_image
