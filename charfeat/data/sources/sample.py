"""The bundled sample set: generated on first use, deterministically, with nothing downloaded.

Each image is a drawn figure whose outfit (garment shape, palette, pattern) shows its style
class, on a random backdrop with clutter, at a random position, size and skin tone: nuisances that an
untrained embedding mixes up with style and a trained head learns to ignore. Metadata follows
the labeller's current schema, so the same code reads it and real files.
"""

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from charfeat.data.sources.local import LocalData
from charfeat.errors import ConfigError

GENERATOR_VERSION = 2
S3_PREFIX = "characters/augmented/generated/"

# style -> (garment palettes, pattern, silhouette)
STYLES = {
    "Casual_Basic": ([(150, 150, 150), (70, 100, 160), (235, 235, 230)], "solid", "tee"),
    "Street_Hip": ([(240, 60, 40), (40, 200, 90), (250, 210, 0)], "blobs", "hoodie"),
    "Sporty_Athleisure": ([(0, 120, 255), (255, 80, 0), (20, 20, 20)], "side_stripes", "tee"),
    "Chic_Modern": ([(15, 15, 15), (245, 245, 245)], "diagonal", "tee"),
    "Classy_Elegant": ([(110, 10, 40), (15, 25, 80)], "solid", "dress"),
    "Dandy_Minimal": ([(120, 120, 125), (190, 170, 140)], "lapels", "suit"),
    "Feminine_Romantic": ([(250, 180, 200), (230, 200, 240)], "dots", "dress"),
    "Vintage_Retro": ([(150, 90, 40), (210, 160, 40), (200, 100, 30)], "checks", "tee"),
    "Gothic_Dark": ([(40, 0, 50), (10, 10, 10)], "cross", "dress"),
    "Bohemian_Free": ([(200, 120, 60), (120, 150, 80), (180, 60, 90)], "zigzag", "dress"),
}
# walls, rooms and streets behind the person: varied, but less than the outfits are
BACKDROPS = [(200, 200, 200), (225, 210, 185), (170, 190, 210), (120, 120, 110), (190, 215, 190)]
SHOT_TYPES = ["Selfie_CloseUp", "Mirrored_Selfie", "Others_Cam"]
FEATURES = ["short hair", "long hair", "glasses", "beard", "curly hair", "earrings", "hat", "freckles"]
VIBES = ["Warm_Friendly", "Energetic_Active", "Artistic_Unique", "Pure_Natural", "Cool_Charismatic",
         "Professional_Smart"]


def _jitter(rng: random.Random, color: tuple, amount: int = 25) -> tuple:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in color)


def _draw_pattern(draw: ImageDraw.ImageDraw, box: tuple, pattern: str, rng: random.Random, base: tuple):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    accent = tuple(255 - c for c in base)
    if pattern == "blobs":
        for _ in range(4):
            cx, cy, r = rng.uniform(x0, x1), rng.uniform(y0, y1), rng.uniform(2, w / 4)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_jitter(rng, accent, 60))
    elif pattern == "side_stripes":
        for sx in (x0 + w * 0.12, x1 - w * 0.22):
            draw.rectangle((sx, y0, sx + w * 0.1, y1), fill=(250, 250, 250))
    elif pattern == "diagonal":
        draw.polygon([(x0, y0), (x1, y0), (x0, y1)], fill=accent)
    elif pattern == "lapels":
        draw.polygon([(x0 + w * 0.3, y0), (x0 + w * 0.5, y0 + h * 0.5), (x0 + w * 0.7, y0)], fill=(245, 245, 245))
        draw.rectangle((x0 + w * 0.46, y0 + h * 0.1, x0 + w * 0.54, y0 + h * 0.6), fill=(150, 20, 30))
    elif pattern == "dots":
        step = max(4, int(w / 4))
        for yy in range(int(y0) + 2, int(y1), step):
            for xx in range(int(x0) + 2, int(x1), step):
                draw.ellipse((xx, yy, xx + step / 3, yy + step / 3), fill=(255, 255, 255))
    elif pattern == "checks":
        step = max(3, int(w / 5))
        for i, yy in enumerate(range(int(y0), int(y1), step)):
            for j, xx in enumerate(range(int(x0), int(x1), step)):
                if (i + j) % 2:
                    draw.rectangle((xx, yy, xx + step - 1, yy + step - 1), fill=_jitter(rng, (60, 30, 10), 15))
    elif pattern == "cross":
        draw.rectangle((x0 + w * 0.45, y0 + h * 0.1, x0 + w * 0.55, y0 + h * 0.7), fill=(200, 200, 200))
        draw.rectangle((x0 + w * 0.3, y0 + h * 0.25, x0 + w * 0.7, y0 + h * 0.33), fill=(200, 200, 200))
    elif pattern == "zigzag":
        points = [(x0 + w * i / 6, y0 + h * (0.4 if i % 2 else 0.6)) for i in range(7)]
        draw.line(points, fill=_jitter(rng, accent, 40), width=max(2, int(h / 10)))


def draw_figure(style: str, size: int, rng: random.Random) -> Image.Image:
    """One image of a figure dressed in ``style``; everything else about it is random."""
    palettes, pattern, silhouette = STYLES[style]
    background = _jitter(rng, rng.choice(BACKDROPS), 30)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(0, 2)):  # background clutter
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 16, size / 8)
        draw.rectangle((x - r, y - r, x + r, y + r), fill=tuple(rng.randint(0, 255) for _ in range(3)))
    scale = rng.uniform(0.85, 1.0) * size
    cx, top = rng.uniform(0.4, 0.6) * size, rng.uniform(0.02, 0.12) * size
    skin = _jitter(rng, rng.choice([(255, 220, 190), (210, 160, 120), (140, 95, 60)]), 15)
    garment = _jitter(rng, rng.choice(palettes))
    head = scale * 0.13
    draw.ellipse((cx - head, top, cx + head, top + 2 * head), fill=skin)
    torso = (cx - scale * 0.2, top + 2 * head, cx + scale * 0.2, top + 2 * head + scale * 0.38)
    if silhouette == "dress":
        draw.polygon([(torso[0], torso[1]), (torso[2], torso[1]), (cx + scale * 0.3, top + scale * 0.95),
                      (cx - scale * 0.3, top + scale * 0.95)], fill=garment)
    else:
        legs = (90, 110, 150) if style == "Casual_Basic" else _jitter(rng, (30, 30, 35))
        draw.rectangle((cx - scale * 0.17, torso[3], cx + scale * 0.17, top + scale * 0.95), fill=legs)
        draw.rectangle(torso, fill=garment)
        if silhouette == "hoodie":
            draw.ellipse((cx - head * 1.3, top - head * 0.2, cx + head * 1.3, top + head * 1.2), outline=garment,
                         width=max(2, int(head / 3)))
        if silhouette == "suit":
            draw.rectangle((torso[0] - scale * 0.03, torso[1], torso[2] + scale * 0.03, torso[3] + scale * 0.05),
                           outline=_jitter(rng, (40, 40, 45)), width=2)
    _draw_pattern(draw, torso, pattern, rng, garment)
    return image


def sample_dir(cache_dir: str | Path, num_classes: int, train_per_class: int, val_per_class: int, image_size: int,
               seed: int) -> Path:
    """The set's own directory under ``cache_dir``, named by every setting that changes it, so sets
    made with other settings live beside it and are never replaced."""
    name = f"v{GENERATOR_VERSION}-{num_classes}cls-{train_per_class}+{val_per_class}-{image_size}px-seed{seed}"
    return Path(cache_dir).expanduser() / name


def _write_sample_set(tmp: Path, num_classes: int, train_per_class: int, val_per_class: int, image_size: int,
                      seed: int) -> None:
    """images/, train.jsonl, val.jsonl and manifest.json into the (new, empty) directory ``tmp``."""
    rng = random.Random(seed)
    (tmp / "images").mkdir()
    index = 0
    splits = {"train": [], "val": []}
    for style in list(STYLES)[:num_classes]:
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            for _ in range(count):
                index += 1
                filename = f"aug_{index:05d}.jpg"
                draw_figure(style, image_size, rng).save(tmp / "images" / filename, quality=92)
                features = rng.sample(FEATURES, k=rng.randint(1, 3))
                splits[split].append({
                    "id": f"aug_{index:05d}",
                    "image_path": S3_PREFIX + filename,
                    "image_filename": filename,
                    "image_metadata": {
                        "fashion_style": style,
                        "shot_type": rng.choice(SHOT_TYPES),
                        "visual_quality": rng.choice(["High", "Medium"]),
                        "physical_features": features,
                        "vibe_category": rng.choice(VIBES),
                        "caption": f"A person in a {style.replace('_', ' ').lower()} outfit with "
                                   f"{', '.join(features)}.",
                    },
                })
    for split, rows in splits.items():
        rng.shuffle(rows)
        with (tmp / f"{split}.jsonl").open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in rows)
    manifest = _manifest(num_classes, train_per_class, val_per_class, image_size, seed)
    (tmp / "manifest.json").write_text(json.dumps(manifest))


def generate_sample_set(cache_dir: str | Path, num_classes: int, train_per_class: int, val_per_class: int,
                        image_size: int, seed: int) -> Path:
    """The set's directory under ``cache_dir``, generated there first if it is not yet.

    Written to a temp dir of its own and renamed into place, so a reader never sees half a set and
    a concurrent run's identical copy is kept. charfeat deletes only that temp dir: a directory
    already at the set's path that is not a finished set is an error, never removed.
    """
    params = (num_classes, train_per_class, val_per_class, image_size, seed)
    if not 2 <= num_classes <= len(STYLES):
        raise ConfigError(f"data.num_classes must be between 2 and {len(STYLES)}, got {num_classes}")
    root = sample_dir(cache_dir, *params)
    if _has_manifest(root, _manifest(*params)):
        return root
    if root.exists():
        raise ConfigError(f"{root} exists but is not a finished sample set (no matching manifest.json); charfeat "
                          "never deletes what it did not make: move it away and run again")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        _write_sample_set(tmp, *params)
        os.rename(tmp, root)
    except OSError:
        if not _has_manifest(root, _manifest(*params)):  # not a concurrent run's identical copy
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # ours alone; gone already after a successful rename
    return root


def _has_manifest(root: Path, manifest: dict) -> bool:
    path = root / "manifest.json"
    return path.is_file() and json.loads(path.read_text()) == manifest


def _manifest(*params) -> dict:
    names = ("num_classes", "train_per_class", "val_per_class", "image_size", "seed")
    return {"generator_version": GENERATOR_VERSION, **dict(zip(names, params))}


class SampleData(LocalData):
    """LocalData over a generated set in its own directory under ``cache_dir``, generated on first use.

    ``root`` exists only to be refused: the sample set is never read from (or written to) a
    folder the user names, so ``data.root=...`` with ``data=sample`` is an error that points to
    ``data=local``, not a run on synthetic images that deletes the folder."""

    def __init__(self, root: str | None, cache_dir: str, train_jsonl: str, val_jsonl: str | None, image_dir: str,
                 num_classes: int, train_per_class: int, val_per_class: int, image_size: int, seed: int, **options):
        if root is not None:
            raise ConfigError(f"data.root={root}: data=sample generates its own images under data.cache_dir and "
                              f"reads no folder of yours; to train on {root}, use data=local data.root={root}")
        self.params = (num_classes, train_per_class, val_per_class, image_size, seed)
        super().__init__(str(sample_dir(cache_dir, *self.params)), train_jsonl, val_jsonl, image_dir, **options)
        self.cache_dir = cache_dir

    def ensure_generated(self) -> Path:
        return generate_sample_set(self.cache_dir, *self.params)

    def records(self, split: str):
        self.ensure_generated()
        return super().records(split)
