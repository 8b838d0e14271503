"""Images as phones and editors write them, through the one decode every path uses: EXIF rotation,
16-bit, transparency, CMYK, decompression bombs, extreme aspect ratios; and the up-front check
(data.verify_images) that finds a truncated file before training instead of at step 30."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from charfeat.config import LocalDataConfig, build
from charfeat.data.images import decode, try_decode
from charfeat.data.sources.base import ImageLoadError


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def portrait_selfie_tagged_6() -> bytes:
    """A 120x40 JPEG (as the sensor stored it) that EXIF orientation 6 turns upright to 40x120;
    red on the sensor's left edge, which is the top once upright."""
    pixels = np.zeros((40, 120, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    return encoded(image, "JPEG", exif=exif, quality=95)


def test_exif_orientation_is_applied():
    image = decode(portrait_selfie_tagged_6())
    assert image.size == (40, 120)
    top, bottom = np.asarray(image)[:10].mean(axis=(0, 1)), np.asarray(image)[-10:].mean(axis=(0, 1))
    assert top[0] > 200 and top[1] < 60 and bottom.max() < 60


def test_16_bit_grayscale_is_scaled_not_clipped():
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    image = np.asarray(decode(encoded(Image.fromarray(ramp))))
    assert image.shape == (64, 64, 3)
    assert (image == 255).mean() < 0.01  # clipping made 99.6 % of these pixels white
    np.testing.assert_allclose(image[..., 0], ramp / 257.0, atol=0.51)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_composited_on_white(mode):
    if mode == "P":
        image = Image.new("P", (8, 8), 0)
        image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        image.info["transparency"] = 0
        image.putpixel((0, 0), 1)
    else:
        image = Image.new(mode, (8, 8), (0, 0, 0, 0) if mode == "RGBA" else (0, 0))
        image.putpixel((0, 0), (255, 0, 0, 255) if mode == "RGBA" else (80, 255))
    pixels = np.asarray(decode(encoded(image)))
    assert (pixels[1:, 1:] == 255).all()  # transparent: the background, not black
    assert tuple(pixels[0, 0]) in ((255, 0, 0), (80, 80, 80))  # opaque pixels unchanged


def test_cmyk_is_converted_to_rgb():
    red = decode(encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=100))
    assert red.mode == "RGB" and np.abs(np.asarray(red, int) - (255, 0, 0)).max() < 8


def test_too_many_pixels_is_a_clear_error_not_a_crash():
    huge = encoded(Image.new("1", (20000, 20000)))  # 400 MP of a 1-bit PNG: a few hundred KB
    reason = try_decode(huge)  # Pillow's limit where no data config gives one (a search query)
    assert isinstance(reason, str) and "20000x20000" in reason and "pixels" in reason
    reason = try_decode(huge, max_pixels=150_000_000)
    assert isinstance(reason, str) and "20000x20000" in reason and "pixels" in reason
    assert isinstance(try_decode(encoded(Image.new("RGB", (300, 200))), max_pixels=50_000), str)
    assert not isinstance(try_decode(encoded(Image.new("RGB", (300, 200))), max_pixels=60_000), str)


def test_extreme_aspect_ratio_is_a_clear_error():
    reason = try_decode(encoded(Image.new("RGB", (2000, 5))))
    assert isinstance(reason, str) and "2000x5" in reason and "aspect ratio" in reason


def make_folder(root: Path, images: dict[str, bytes]) -> Path:
    """``images`` as the training split, two good images as the validation split."""
    (root / "images").mkdir(parents=True)
    for split, named in (("train", images), ("val", {"v0.png": good_png(10), "v1.png": good_png(11)})):
        rows = []
        for i, (name, blob) in enumerate(named.items()):
            (root / "images" / name).write_bytes(blob)
            rows.append({"id": f"{split}{i}", "image_filename": name,
                         "image_metadata": {"fashion_style": ("Casual_Basic", "Street_Hip")[i % 2]}})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def good_png(seed: int) -> bytes:
    return encoded(Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), np.uint8)))


BAD = {  # name -> (bytes, what the report says)
    "truncated.jpg": (encoded(Image.open(io.BytesIO(good_png(5))), "JPEG")[:700], "undecodable"),
    "bomb.png": (encoded(Image.new("1", (20000, 20000))), "data.max_image_pixels"),
    "sliver.png": (encoded(Image.new("RGB", (2000, 5))), "aspect ratio"),
    "text.png": (b"not an image", "not an image"),
}


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_every_bad_image_is_found_before_training(tmp_path, policy):
    """A trainable run checks every pixel up front (verify_images=full); each bad image is named
    (error) or left out (skip), none crashes the run without a name."""
    images = {f"ok{i}.png": good_png(i) for i in range(4)} | {name: blob for name, (blob, _) in BAD.items()}
    root = make_folder(tmp_path, images)
    full = {"verify_images": "full"} if policy == "error" else {}  # skip checks every pixel by default
    data = build(LocalDataConfig, root=str(root), on_bad_record=policy, **full)
    if policy == "error":
        with pytest.raises(ImageLoadError) as err:
            data.records("train")
        assert "4 train image(s) cannot be used" in str(err.value)
    else:
        assert sorted(r.filename for r in data.records("train")) == [f"ok{i}.png" for i in range(4)]
        report = data.describe_issues()
    for name, (_, what) in BAD.items():
        assert what in (str(err.value) if policy == "error" else report)
        assert f"{name} (id " in (str(err.value) if policy == "error" else report)


def test_verify_images_defaults_follow_the_backbone(compose_cfg):
    assert compose_cfg("data=local", "data.root=/d").data.verify_images == "header"  # frozen: extraction decodes
    assert compose_cfg("data=local", "data.root=/d", "backbone.train=lora").data.verify_images == "full"
    assert compose_cfg("data=local", "data.root=/d", "data.on_bad_record=skip").data.verify_images == "full"
    assert compose_cfg("data=local", "data.root=/d", "data.verify_images=none").data.verify_images == "none"


def test_header_check_reads_no_pixels_but_finds_the_rest(tmp_path):
    images = {"ok.png": good_png(0), "ok2.png": good_png(1), "truncated.jpg": BAD["truncated.jpg"][0],
              "text.png": BAD["text.png"][0]}
    data = build(LocalDataConfig, root=str(make_folder(tmp_path, images)), on_bad_record="skip",
                 verify_images="header")
    kept = {r.filename for r in data.records("train")}
    assert kept == {"ok.png", "ok2.png", "truncated.jpg"}  # the truncated body is found when it is decoded
