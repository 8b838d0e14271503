"""Training-image augmentation with Pillow: random resized crop, horizontal flip, colour jitter.

Why Pillow and not albumentations or kornia: images arrive as PIL images and the model's processor
takes PIL images; every operation needed here is one Pillow call in C (a crop is lazy, a resize or
an enhance is one pass); albumentations would add OpenCV and a numpy round trip, kornia a tensor
round trip per image of a different size. Neither needs torchvision, neither would be faster here.

Every view is a pure function of its seed (`Augment.__call__` takes a numpy Generator), so a
resumed run and every DataLoader worker draw the same views: training seeds by (augment.seed,
epoch, the record's place in its split), precomputed views of a frozen backbone by (augment.seed,
view, the image's content key), which is what lets the feature cache hold them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageOps


@dataclass(frozen=True)
class Augment:
    """The ``augment`` config group's keys (``charfeat.config.AugmentConfig``): what each is and its range.

    ``crop_scale`` is the crop's share of the image's area and ``crop_ratio`` its aspect range (null:
    no crop); ``flip`` the chance of a mirror image; ``brightness``, ``contrast`` and ``saturation``
    the largest relative change of each; ``grayscale`` the chance of dropping colour; ``views`` the
    views a frozen backbone's feature cache holds per training image; ``seed`` seeds every draw.
    """

    name: str
    views: int
    seed: int
    crop_scale: tuple[float, float] | None
    crop_ratio: tuple[float, float]
    flip: float
    brightness: float
    contrast: float
    saturation: float
    grayscale: float

    def __post_init__(self):
        if self.views < 1:
            raise ValueError(f"augment.views must be >= 1, got {self.views}")
        if self.crop_scale is not None:
            lo, hi = self.crop_scale
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"augment.crop_scale must satisfy 0 < min <= max <= 1, got {list(self.crop_scale)}")
            object.__setattr__(self, "crop_scale", (float(lo), float(hi)))
        object.__setattr__(self, "crop_ratio", tuple(float(r) for r in self.crop_ratio))
        for key in ("flip", "grayscale"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"augment.{key} is a probability in [0, 1], got {getattr(self, key)}")
        for key in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"augment.{key} must be in [0, 1), got {getattr(self, key)}")

    @property
    def active(self) -> bool:
        """Whether any view differs from the image."""
        return (self.crop_scale is not None or self.flip > 0 or self.grayscale > 0
                or max(self.brightness, self.contrast, self.saturation) > 0)

    def fingerprint(self) -> dict:
        """What changes a view (not ``name`` nor ``views``): part of a cached view's key."""
        spec = asdict(self)
        del spec["name"], spec["views"]
        return spec

    def rng(self, stream: int, item: int | bytes) -> np.random.Generator:
        """The generator of one view: ``stream`` is the epoch (training) or the view index (cached
        views), ``item`` the record's place in its split or the image's content key."""
        item = int.from_bytes(item[:16], "little") if isinstance(item, bytes) else int(item)
        return np.random.default_rng([self.seed, stream, item])

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """One view of an upright RGB image; the input is never modified."""
        if self.crop_scale is not None:
            image = image.crop(self._crop_box(image.width, image.height, rng))
        if rng.random() < self.flip:
            image = ImageOps.mirror(image)
        for key, enhancer in (("brightness", ImageEnhance.Brightness), ("contrast", ImageEnhance.Contrast),
                              ("saturation", ImageEnhance.Color)):
            amount = getattr(self, key)
            factor = 1.0 + rng.uniform(-amount, amount) if amount else 1.0
            if factor != 1.0:
                image = enhancer(image).enhance(factor)
        if rng.random() < self.grayscale:
            image = ImageOps.grayscale(image).convert("RGB")
        return image

    def _crop_box(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """A box of a random share of the area (``crop_scale``) and aspect ratio (``crop_ratio``, drawn
        log-uniformly), as torchvision's RandomResizedCrop draws it; the whole image if ten draws miss."""
        area = width * height
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        for _ in range(10):
            target = area * rng.uniform(*self.crop_scale)
            ratio = math.exp(rng.uniform(log_lo, log_hi))
            w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < w <= width and 0 < h <= height:
                left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
                return left, top, left + w, top + h
        return 0, 0, width, height


def augments(augment: Augment | None) -> bool:
    """Whether ``augment`` (None: no augmentation) changes any view."""
    return augment is not None and augment.active
