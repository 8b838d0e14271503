"""Augmentation: views are a pure function of their seed, stay within their settings, never modify
the image, and the presets are what their YAML says."""

import numpy as np
import pytest
from PIL import Image

from charfeat.config import AugmentConfig, build
from configured import option


def photo(width=120, height=90):
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def preset(choice, **values):
    return build(AugmentConfig, **{**option("augment", choice), **values})


def test_none_changes_nothing_and_is_inactive():
    augment = preset("none")
    image = photo()
    assert not augment.active
    assert augment(image, augment.rng(0, 0)).tobytes() == image.tobytes()


@pytest.mark.parametrize("name", ["light", "strong"])
def test_a_view_is_a_function_of_its_seed_and_leaves_the_image_alone(name):
    augment, image = preset(name), photo()
    before = image.tobytes()
    first = augment(image, augment.rng(3, 17))
    assert augment(image, augment.rng(3, 17)).tobytes() == first.tobytes()  # a resumed run, another worker
    others = {augment(image, augment.rng(epoch, 17)).tobytes() for epoch in range(4, 12)}
    assert first.tobytes() not in others or len(others) > 1
    assert len(others) > 4  # epochs differ
    assert image.tobytes() == before and first.mode == "RGB"


def test_crops_keep_the_configured_share_of_the_area():
    augment = preset("light", flip=0.0, brightness=0.0, contrast=0.0, saturation=0.0)
    image = photo(200, 160)
    shares = [augment(image, augment.rng(0, i)).size for i in range(200)]
    areas = [w * h / (200 * 160) for w, h in shares]
    assert 0.55 <= min(areas) and max(areas) <= 1.0  # [0.6, 1.0], up to rounding
    assert max(areas) - min(areas) > 0.2


def test_content_keys_seed_views_too():
    augment = preset("strong")
    assert augment.rng(1, b"\x01" * 32).integers(1 << 30) == augment.rng(1, b"\x01" * 32).integers(1 << 30)
    assert augment.rng(1, b"\x01" * 32).integers(1 << 30) != augment.rng(1, b"\x02" * 32).integers(1 << 30)


def test_settings_out_of_range_are_refused_by_key():
    with pytest.raises(ValueError, match="augment.crop_scale"):
        preset("light", crop_scale=[0.8, 0.5])
    with pytest.raises(ValueError, match="augment.flip"):
        preset("light", flip=1.5)
    with pytest.raises(ValueError, match="augment.views"):
        preset("light", views=0)


def test_the_fingerprint_leaves_out_only_name_and_views():
    assert preset("light").fingerprint() == preset("light", name="mine", views=4).fingerprint()
    assert preset("light").fingerprint() != preset("light", seed=1).fingerprint()
    assert preset("light").fingerprint() != preset("strong").fingerprint()
