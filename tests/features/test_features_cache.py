"""Feature extraction through the on-disk cache: hits, keys, corruption, interrupted runs, record text."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from charfeat.data.records import Record
from charfeat.features.cache import FeatureCache, item_key
from charfeat.data.records import record_text
from charfeat.features.extract import ExtractionStats, FeatureExtractor
from configured import tiny_backbone

torch.set_num_threads(1)  # tiny matmuls: one thread is faster on a shared 2-core machine
CPU = torch.device("cpu")


def image(seed: int, width: int = 96, height: int = 96) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


class FakeData:
    """The DataSource methods extraction uses, with a loaded-image count (in this process: no input
    workers); ``identities`` (filename -> what identifies its bytes) stands for a local file's stat or
    an S3 ETag (none by default)."""

    num_workers = 0

    def __init__(self, images: dict[str, Image.Image], identities: dict[str, str] | None = None):
        self.images = images
        self.identities = identities or {}
        self.loaded = 0

    def location(self, split, filename):
        return filename

    def load_images(self, split, records):
        self.loaded += len(records)
        return [self.images[r.filename].copy() for r in records]

    def identity(self, split, filename):
        return self.identities.get(filename)


def make_records(n: int) -> list[Record]:
    return [Record(f"id{i}", f"f{i}.jpg", "Casual_Basic" if i % 2 else "Street_Hip",
                   {"fashion_style": "Casual_Basic" if i % 2 else "Street_Hip", "physical_features": ["hat"] * (i % 3),
                    "vibe_category": "Warm_Friendly", "caption": "x" * (3 * i)}) for i in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from charfeat.models.backbone.tiny import build_tiny_qwen3_vl

    return str(build_tiny_qwen3_vl(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture
def data():
    sizes = [(96, 96), (64, 64), (128, 96), (96, 64)]
    return FakeData({f"f{i}.jpg": image(i, *sizes[i % 4]) for i in range(10)})


def backbone(tiny, cache_dir, **kwargs):
    return tiny_backbone(tiny, feature_cache=None if cache_dir is None else str(cache_dir), **kwargs)


def run(model, data, records, batch_size=3, extractor=None):
    stats = ExtractionStats()
    extractor = extractor or FeatureExtractor(model, batch_size, CPU)
    return extractor.extract(data, "train", records, stats=stats), stats


def cache_of(model):
    return FeatureExtractor(model, 1, CPU).cache


def test_second_pass_reads_everything_from_disk(tiny, tmp_path, data):
    records = make_records(10)
    first, stats = run(backbone(tiny, tmp_path), data, records)
    assert (stats.computed, stats.cache_hits) == (10, 0)
    fresh_model = backbone(tiny, tmp_path)  # another run: nothing in memory
    fresh_model.pool = None  # the model must not run at all
    second, stats = run(fresh_model, data, records, batch_size=4)
    assert (stats.computed, stats.cache_hits, stats.batches) == (0, 10, 0)
    assert torch.equal(first, second)
    uncached, _ = run(backbone(tiny, None), data, records, batch_size=10)
    torch.testing.assert_close(first, uncached, atol=1e-5, rtol=1e-5)  # sorting and batching change nothing
    cache = cache_of(fresh_model)
    assert len(cache.shards()) == 1 and (cache.dir / "key.json").is_file()
    assert cache.dir.parent == tmp_path


def test_identified_images_are_found_without_reading_them_or_loading_the_backbone(tiny, tmp_path, data):
    records = make_records(10)
    data.identities = {f"f{i}.jpg": f"file:/photos/f{i}.jpg:size:mtime" for i in range(8)}  # two unidentified
    first, _ = run(backbone(tiny, tmp_path), data, records)
    assert len(list(cache_of(backbone(tiny, tmp_path)).dir.glob("alias-*.safetensors"))) == 1
    fresh = backbone(tiny, tmp_path)
    assert not fresh.loaded  # a frozen backbone reads its weights on first use
    data.loaded = 0
    second, stats = run(fresh, data, records)
    assert (stats.cache_hits, stats.unread, stats.computed) == (10, 8, 0)
    assert data.loaded == 2 and not fresh.loaded  # only the unidentified two were read; no forward, no weights
    assert "processor" in fresh.encoder.__dict__  # the two read images went through it

    cached = backbone(tiny, tmp_path)
    _, stats = run(cached, data, [r for r in records if r.filename in data.identities])
    assert stats.unread == 8 and not cached.loaded
    assert "processor" not in cached.encoder.__dict__  # nor its tokenizer: nothing was prepared
    assert torch.equal(first, second)

    data.identities["f3.jpg"] = "file:/photos/f3.jpg:size:new-mtime"  # the file changed: read and hashed again
    data.images["f3.jpg"].putpixel((0, 0), (1, 2, 3))
    data.loaded = 0
    third, stats = run(fresh, data, records)
    assert (stats.unread, stats.computed, data.loaded) == (7, 1, 3) and fresh.loaded
    assert not torch.equal(third[3], first[3]) and torch.equal(third[:3], first[:3])


def test_a_bad_alias_file_is_dropped_and_the_images_read_again(tiny, tmp_path, data, caplog):
    records = make_records(4)
    data.identities = {f"f{i}.jpg": f"id{i}" for i in range(4)}
    expected, _ = run(backbone(tiny, tmp_path), data, records)
    [aliases] = cache_of(backbone(tiny, tmp_path)).dir.glob("alias-*.safetensors")
    raw = bytearray(aliases.read_bytes())
    raw[-3] ^= 0xFF
    aliases.write_bytes(bytes(raw))
    data.loaded = 0
    with caplog.at_level(logging.WARNING, logger="charfeat.features.cache"):
        got, stats = run(backbone(tiny, tmp_path), data, records)
    assert "dropping bad alias file" in caplog.text and not aliases.exists()
    assert (stats.unread, stats.cache_hits, data.loaded) == (0, 4, 4) and torch.equal(got, expected)


def test_subset_and_order_come_back_right(tiny, tmp_path, data):
    records = make_records(10)
    full, _ = run(backbone(tiny, tmp_path), data, records)
    picked = [records[i] for i in (7, 2, 2, 9)]
    part, stats = run(backbone(tiny, tmp_path), data, picked)
    assert stats.computed == 0
    assert torch.equal(part, full[[7, 2, 2, 9]])


@pytest.mark.parametrize("change", [{"prompt": "Describe the outfit."}, {"pooling": "last"}, {"layer": 1},
                                    {"max_pixels": 64 * 64}, {"text": "caption"}, {"attn_implementation": "eager"},
                                    {"format": "embedding"}])
def test_any_key_change_recomputes(tiny, tmp_path, data, change):
    records = make_records(4)
    run(backbone(tiny, tmp_path), data, records)
    _, stats = run(backbone(tiny, tmp_path, **change), data, records)
    assert stats.computed == 4
    assert len(list(tmp_path.iterdir())) == 2  # one directory per configuration


def test_the_embedding_formats_cache_key_holds_its_instruction(tiny, tmp_path, data):
    records = make_records(4)
    embedding = {"format": "embedding", "pooling": "last"}
    first, stats = run(backbone(tiny, tmp_path, **embedding), data, records)
    assert stats.computed == 4
    _, stats = run(backbone(tiny, tmp_path, **embedding, instruction="Represent the user's input"), data, records)
    assert stats.computed == 0  # rendered the same: "." added
    other, stats = run(backbone(tiny, tmp_path, **embedding, instruction="Represent the clothing style."), data,
                       records)
    assert stats.computed == 4 and not torch.allclose(first, other)
    assert len(list(tmp_path.iterdir())) == 2


def test_the_chat_formats_cache_key_is_the_one_from_before_formats(tiny):
    """Features cached before backbone.format existed stay valid: the chat format's key has the same entries."""
    fingerprint = backbone(tiny, None).feature_fingerprint()
    assert set(fingerprint) == {"feature_code", "torch", "model", "revision", "prompt", "text", "pixels", "pooling",
                                "layer", "dtype", "attn_implementation", "transformers"}
    assert backbone(tiny, None, instruction="Not rendered.", embed_dim=8).feature_fingerprint() == fingerprint


def test_embed_dim_is_cut_from_the_cached_pooled_features(tiny, tmp_path, data):
    """The cache holds pooled features: a run with another embed_dim reuses them, cut and normalised."""
    records = make_records(6)
    full, _ = run(backbone(tiny, tmp_path, format="embedding", pooling="last"), data, records)
    model = backbone(tiny, tmp_path, format="embedding", pooling="last", embed_dim=32)
    model.pool = None  # the model must not run: every feature is in the cache
    cut, stats = run(model, data, records)
    assert stats.computed == 0 and cut.shape == (6, 32) and cache_of(model).dim == 128
    torch.testing.assert_close(cut.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(cut, torch.nn.functional.normalize(full[:, :32], dim=1))
    assert not model.loaded


def test_new_weights_or_new_pixels_recompute(tiny, tmp_path, data):
    import shutil

    records = make_records(4)
    run(backbone(tiny, tmp_path), data, records)
    data.images["f1.jpg"].putpixel((0, 0), (1, 2, 3))
    _, stats = run(backbone(tiny, tmp_path), data, records)
    assert stats.computed == 1  # only the changed image
    retrained = tmp_path.parent / "retrained"
    shutil.copytree(tiny, retrained)
    (retrained / "config.json").write_text((retrained / "config.json").read_text() + "\n")
    _, stats = run(backbone(str(retrained), tmp_path), data, records)
    assert stats.computed == 4


def test_frozen_only(tiny, tmp_path):
    assert cache_of(backbone(tiny, tmp_path, train="lora")) is None
    assert cache_of(backbone(tiny, None)) is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_corrupt_shard_is_detected_and_rebuilt(tiny, tmp_path, data, damage, caplog):
    records = make_records(6)
    expected, _ = run(backbone(tiny, tmp_path), data, records)
    [shard] = cache_of(backbone(tiny, tmp_path)).shards()
    raw = bytearray(shard.read_bytes())
    if damage == "flip":
        raw[-5] ^= 0xFF
    shard.write_bytes(bytes(raw[: len(raw) // 2] if damage == "truncate" else b"" if damage == "empty" else raw))
    with caplog.at_level(logging.WARNING, logger="charfeat.features.cache"):
        got, stats = run(backbone(tiny, tmp_path), data, records)
    assert "dropping bad shard" in caplog.text
    assert stats.computed == 6 and torch.equal(got, expected)
    shards = cache_of(backbone(tiny, tmp_path)).shards()
    assert len(shards) == 1 and shards[0] != shard


def test_interrupted_run_keeps_finished_shards(tiny, tmp_path, data, monkeypatch):
    records = make_records(10)
    model = backbone(tiny, tmp_path)
    extractor = FeatureExtractor(model, 3, CPU)
    extractor.cache.flush_every = 3
    calls = {"n": 0}
    real_pool = model.pool  # what extraction runs (and caches)

    def dies_on_third_batch(**inputs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_pool(**inputs)

    model.pool = dies_on_third_batch
    with pytest.raises(KeyboardInterrupt):
        run(model, data, records, extractor=extractor)
    (extractor.cache.dir / ".shard-x.safetensors.tmp").write_bytes(b"half a shard")  # a killed write
    _, stats = run(backbone(tiny, tmp_path), data, records)
    assert stats.cache_hits == 6 and stats.computed == 4


def test_cache_roundtrip_and_shape_check(tmp_path):
    cache = FeatureCache(tmp_path, {"a": 1}, dim=3)
    keys = [bytes([i]) * 32 for i in range(4)]
    feats = torch.randn(4, 3)
    cache.put(keys, feats)
    cache.flush()
    again = FeatureCache(tmp_path, {"a": 1}, dim=3)
    assert all(torch.equal(a, b) for a, b in zip(again.get(keys), feats))
    assert FeatureCache(tmp_path, {"a": 2}, dim=3).get(keys) == [None] * 4
    with pytest.raises(ValueError, match="dim"):
        again.put(keys[:2], torch.randn(2, 4))


def test_item_key_follows_pixels_and_text():
    a, b = image(0), image(0)
    assert item_key(a, None) == item_key(b, None) == item_key(a.convert("RGBA"), None)
    assert item_key(a, "t") != item_key(a, None)
    assert item_key(a, None) != item_key(image(1), None)


def test_record_text_modes_never_hand_over_the_label():
    record = Record("r", "r.jpg", "Chic_Modern", {"fashion_style": "Chic_Modern", "physical_features": ["hat", "glasses"],
                                                 "vibe_category": "Warm_Friendly", "caption": "A person."})
    assert record_text(record, "none") is None
    assert record_text(record, "caption") == "A person."
    assert record_text(record, "text_input") == "Features: hat, glasses. Vibe: Warm_Friendly. Caption: A person."
    by_vibe = Record("r", "r.jpg", "Warm_Friendly", record.metadata)
    assert record_text(by_vibe, "text_input") == "Style: Chic_Modern. Features: hat, glasses. Caption: A person."
    bare = Record("r", "r.jpg", "Chic_Modern", {"fashion_style": "Chic_Modern"})
    assert record_text(bare, "caption") is None
    assert record_text(bare, "text_input") == "Features: . Vibe: Unknown."


def test_sorting_by_length_cuts_padding(tiny, data):
    records = make_records(10)
    extractor = FeatureExtractor(backbone(tiny, None), 2, CPU)
    sorted_stats = run(None, data, records, extractor=extractor)[1]
    file_order = ExtractionStats()
    for start in range(0, len(records), 2):
        batch = records[start:start + 2]
        extractor.forward(extractor.backbone.preprocess(data.load_images("train", batch)), file_order)
    assert sorted_stats.batches == file_order.batches == 5
    assert sorted_stats.padding_share < file_order.padding_share


@pytest.mark.slow
def test_frozen_runs_share_the_cache(compose_cfg, tmp_path, caplog):
    """Two training runs (as two jobs of a sweep would): the second never runs the backbone."""
    from charfeat.train import train

    overrides = ("trainer.epochs=1", "logger=none", "data.train_per_class=8", "data.val_per_class=4",
                 f"backbone.feature_cache={tmp_path / 'features'}")
    with caplog.at_level(logging.INFO, logger="charfeat.features"):
        train(compose_cfg(*overrides))
        first = [r.getMessage() for r in caplog.records if r.getMessage().startswith("features ")]
        caplog.clear()
        train(compose_cfg(*overrides, "loss.margin=0.3"))
        second = [r.getMessage() for r in caplog.records if r.getMessage().startswith("features ")]
    assert len(first) == len(second) == 2  # train and val
    assert all(", 0 from the cache" in m for m in first)
    assert all(m.endswith(" 0 computed") for m in second)


def test_hub_ids_are_keyed_by_their_cached_commit(tmp_path, monkeypatch):
    from charfeat.models.backbone.revision import model_revision

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--Qwen--Qwen3-VL-2B-Instruct"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert model_revision("Qwen/Qwen3-VL-2B-Instruct") == f"commit:{commit}"
    local = tmp_path / "local"
    local.mkdir()
    (local / "config.json").write_text("{}")
    first = model_revision(str(local))
    (local / "config.json").write_text('{"changed": 1}')
    assert first.startswith("sha256:") and model_revision(str(local)) != first


def test_unwritable_cache_dir_only_warns(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = FeatureCache(blocker / "features", {"a": 1}, dim=2)
    with caplog.at_level(logging.WARNING, logger="charfeat.features.cache"):
        cache.put([b"k" * 32], torch.ones(1, 2))
        cache.flush()
    assert "cannot write" in caplog.text
    assert torch.equal(cache.get([b"k" * 32])[0], torch.ones(2))


def test_only_the_shards_a_run_needs_are_read(tmp_path, caplog):
    """A configuration's cache holds every dataset ever embedded with it: a run reads the keys, and
    the features (and checksums) of only the shards its own items are in."""
    cache = FeatureCache(tmp_path, {"a": 1}, dim=4, flush_every=2)
    keys = [bytes([i]) * 32 for i in range(6)]
    feats = torch.randn(6, 4)
    for start in (0, 2, 4):  # three shards of two items
        cache.put(keys[start:start + 2], feats[start:start + 2])
    first, *others = cache.shards()
    assert len(others) == 2
    for shard in others:  # damage every other shard's features (their last bytes)
        raw = bytearray(shard.read_bytes())
        raw[-3] ^= 0xFF
        shard.write_bytes(bytes(raw))
    wanted = [k for k, where in FeatureCache(tmp_path, {"a": 1}, dim=4)._load().items() if where[0] == first]
    fresh = FeatureCache(tmp_path, {"a": 1}, dim=4)
    with caplog.at_level(logging.WARNING, logger="charfeat.features.cache"):
        got = fresh.get(wanted)
    assert all(torch.equal(row, feats[keys.index(k)]) for k, row in zip(wanted, got))
    assert "dropping bad shard" not in caplog.text and all(shard.exists() for shard in others)
    with caplog.at_level(logging.WARNING, logger="charfeat.features.cache"):
        again = fresh.get(keys)  # now read: found bad, dropped, to be recomputed
    assert [k for k, row in zip(keys, again) if row is not None] == wanted
    assert "dropping bad shard" in caplog.text and fresh.shards() == [first]


def test_windows_bound_the_decoded_pixels_held_at_once(tiny, data, monkeypatch):
    """Phone photos are 36 MB each decoded: a window holds a byte budget of them, not 8 batches."""
    import charfeat.data.loader as loader

    records = make_records(10)  # images of 96x96, 64x64, 128x96, 96x64 pixels (27,648 bytes and less)
    sizes = {r.filename: data.images[r.filename].width * data.images[r.filename].height * 3 for r in records}
    loads = []
    real_load = data.load_images
    data.load_images = lambda split, batch: loads.append(len(batch)) or real_load(split, batch)
    seen = []
    for start, images in loader.windows(data, "train", records, max_images=8, max_bytes=60_000):
        names = [r.filename for r in records[start:start + len(images)]]
        assert sum(sizes[n] for n in names) <= 60_000 or len(names) == 1
        seen += names
    assert seen == [r.filename for r in records] and max(loads) <= 2

    expected, _ = run(backbone(tiny, None), data, records, batch_size=4)
    monkeypatch.setattr(loader, "WINDOW_BYTES", 60_000)
    got, stats = run(backbone(tiny, None), data, records, batch_size=4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert stats.batches > 3  # smaller windows, smaller batches: the same features


def test_augmented_views_are_cached_under_their_own_keys_and_found_by_alias(tiny, tmp_path, data):
    from charfeat.config import AugmentConfig, build
    from charfeat.data.loader import ViewSpec

    records = make_records(8)
    data.identities = {f"f{i}.jpg": f"file:/photos/f{i}.jpg:size:mtime" for i in range(8)}
    light = build(AugmentConfig, crop_scale=[0.5, 1.0], flip=0.5, brightness=0.2)
    plain, _ = run(backbone(tiny, tmp_path), data, records)
    views = []
    for view in range(2):
        stats = ExtractionStats()
        views.append(FeatureExtractor(backbone(tiny, tmp_path), 3, CPU).extract(
            data, "train", records, stats=stats, view=ViewSpec(light, view, by_content=True)))
        assert (stats.computed, stats.unread) == (8, 0)  # a new view: computed, not the plain feature
    assert not torch.allclose(views[0], views[1]) and not torch.allclose(views[0], plain)

    fresh, stats = backbone(tiny, tmp_path), ExtractionStats()
    again = FeatureExtractor(fresh, 3, CPU).extract(data, "train", records, stats=stats,
                                                    view=ViewSpec(light, 1, by_content=True))
    assert (stats.cache_hits, stats.unread, stats.computed) == (8, 8, 0) and not fresh.loaded
    assert torch.equal(again, views[1])
    uncached = FeatureExtractor(backbone(tiny, None), 4, CPU).extract(data, "train", records,
                                                                     view=ViewSpec(light, 1, by_content=True))
    torch.testing.assert_close(uncached, views[1], atol=1e-5, rtol=1e-5)  # a view is a function of the image
