"""Encoded image bytes -> a decoded RGB image, the same way wherever an image is read."""

import io

from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


def decode(blob: bytes) -> Image.Image:
    """Fully decode (a truncated JPEG fails here, not later in the model) and convert to RGB."""
    with Image.open(io.BytesIO(blob)) as image:
        return image.convert("RGB")


def try_decode(blob: bytes) -> Image.Image | str:
    """The decoded image, or why it could not be decoded."""
    try:
        return decode(blob)
    except (UnidentifiedImageError, OSError) as err:
        return f"undecodable ({err})"
