"""Encoded image bytes -> a decoded RGB image, the same way wherever an image is read.

Photos arrive as phones and editors write them: rotated by an EXIF tag, with transparency, in
16-bit or CMYK, or far larger than any model input. Every path that decodes an image (training,
the feature cache, evaluation, search) goes through `decode`, so all of them see the same
upright RGB pixels; a file that cannot become one is an `ImageError` saying why, never a crash
that names no file and never a placeholder.
"""

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from charfeat.config import VerifyImages

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
# Transparent pixels are composited on this colour: what a photo viewer shows, never black by accident.
BACKGROUND = (255, 255, 255)
# Qwen-VL's processor (smart_resize) refuses images whose long side exceeds 200 times the short one.
MAX_ASPECT_RATIO = 200
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")

# charfeat checks the pixel count itself, per image, naming the image and data.max_image_pixels;
# Pillow's process-wide check (a warning above 89 MP, an error above 179 MP, neither naming the
# file) would preempt it. Callers without a data config (a search query) keep Pillow's limit.
PILLOW_LIMIT = 2 * Image.MAX_IMAGE_PIXELS
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """Why one image cannot be used (the caller adds which image it is)."""


def open_image(blob: bytes, max_pixels: int | None) -> Image.Image:
    """The image's header, parsed and checked (format, size, pixel limit, aspect ratio); not decoded."""
    try:
        image = Image.open(io.BytesIO(blob))
    except UnidentifiedImageError:
        raise ImageError(f"not an image (no format Pillow reads; {len(blob):,} bytes)") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"not an image ({type(err).__name__}: {err})") from None
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise ImageError(f"{width}x{height} = {width * height:,} pixels, more than data.max_image_pixels="
                         f"{max_pixels:,} (a decompression bomb, or raise the limit)")
    if min(width, height) < 1 or max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        image.close()
        raise ImageError(f"{width}x{height}: aspect ratio above {MAX_ASPECT_RATIO}, which the model's "
                         "processor refuses")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB: EXIF orientation applied, 16-bit scaled (not clipped), transparency
    composited on `BACKGROUND`, CMYK and palettes converted. A loaded upright RGB image is
    returned as it is: a 12 MP photo is 36 MB, and every copy counts."""
    ImageOps.exif_transpose(image, in_place=True)
    if image.mode in SIXTEEN_BIT_MODES:  # 16-bit grayscale: convert("L") would clip everything above 255
        pixels = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        background = Image.new("RGBA", image.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode(blob: bytes, max_pixels: int | None = PILLOW_LIMIT, at_least: int | None = None) -> Image.Image:
    """Fully decode (a truncated JPEG fails here, not later in the model) to upright RGB.

    ``max_pixels``: ``data.max_image_pixels`` from a data source; None: no limit. ``at_least``: a
    JPEG may be decoded scaled down by 2, 4 or 8 (in the decoder: a 12 MP photo in a tenth of the
    time) as long as both sides stay at least this long; other formats decode in full."""
    image = open_image(blob, max_pixels)
    try:
        if at_least is not None:
            image.draft("RGB", (at_least, at_least))
        image.load()
        return to_rgb(image)
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever a broken file makes a decoder raise is that file's fault
        raise ImageError(f"undecodable ({type(err).__name__}: {err})") from None


def try_decode(blob: bytes, max_pixels: int | None = PILLOW_LIMIT, at_least: int | None = None) -> Image.Image | str:
    """The decoded image, or why it could not be decoded."""
    try:
        return decode(blob, max_pixels, at_least)
    except ImageError as err:
        return str(err)


def verify(blob: bytes, level: VerifyImages, max_pixels: int | None) -> str | None:
    """Why the image is unusable at this depth of check, or None. ``header`` parses the header
    (format, size, limits); ``full`` decodes every pixel and drops them at once."""
    try:
        if level == VerifyImages.full:
            decode(blob, max_pixels).close()
        elif level == VerifyImages.header:
            open_image(blob, max_pixels).close()
    except ImageError as err:
        return str(err)
    return None
