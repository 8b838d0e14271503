"""Leakage guards: a seeded split keeps groups whole, a val file sharing a group with train is named,
and near-duplicate pictures across splits (exact, re-encoded, resized, mirrored) are caught."""

import io
import json
import logging
import random
import shutil
from collections import Counter

import pytest
from PIL import Image, ImageOps

from charfeat.config import LocalDataConfig, OnLeak, build
from charfeat.data.leakage import LeakError, check_leakage
from charfeat.data.records import Record, RecordError, read_records
from charfeat.data.split import grouped_split


def grouped_records(seed: int, groups: int = 60) -> list[Record]:
    """Groups of 1 to 6 records (augmented copies of one picture), each group of one class, 5
    classes of very different sizes; a few groups mix two classes (one person, two outfits)."""
    rng = random.Random(seed)
    records = []
    for g in range(groups):
        label = rng.choice(["a"] * 6 + ["b", "c", "d"] + ["e"] * 2)
        for copy in range(rng.randint(1, 6)):
            mixed = "b" if g % 17 == 0 and copy % 2 else label
            records.append(Record(f"g{g}-{copy}", f"g{g}-{copy}.jpg", mixed, group=f"person{g}"))
    return records


@pytest.mark.parametrize("seed", range(20))
def test_grouped_split_never_splits_a_group(seed):
    records = grouped_records(seed)
    train, val = grouped_split(records, 0.2, seed)
    assert not {r.group for r in train} & {r.group for r in val}
    assert sorted(train + val, key=lambda r: r.id) == sorted(records, key=lambda r: r.id)
    totals, in_val = Counter(r.label for r in records), Counter(r.label for r in val)
    assert all(in_val[c] < totals[c] for c in totals)  # every class keeps train records
    assert abs(len(val) - 0.2 * len(records)) <= 0.1 * len(records)  # about the share asked for


def test_grouped_split_is_seeded_and_ignores_file_order():
    records = grouped_records(0)
    train, val = grouped_split(records, 0.2, seed=3)
    again = grouped_split(list(reversed(records)), 0.2, seed=3)[1]
    assert sorted(r.id for r in again) == sorted(r.id for r in val)
    assert sorted(r.id for r in grouped_split(records, 0.2, seed=4)[1]) != sorted(r.id for r in val)


def test_a_class_whose_groups_exceed_its_share_still_gets_val_records():
    """Class b: 2 groups of 5 (target 1 of 10 at 10 %): its smaller group goes to val rather than none."""
    records = [Record(f"a{i}", f"a{i}.jpg", "a", group=f"ga{i}") for i in range(40)]
    records += [Record(f"b{g}{i}", f"b{g}{i}.jpg", "b", group=f"gb{g}") for g in range(2) for i in range(5 - g)]
    train, val = grouped_split(records, 0.1, seed=0)
    assert Counter(r.label for r in val) == {"a": 4, "b": 4}
    assert {r.group for r in val if r.label == "b"} == {"gb1"}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def row(i: int, style: str, **extra) -> dict:
    metadata = {"fashion_style": style, **extra.pop("meta", {})}
    return {"id": f"r{i}", "image_filename": f"r{i}.jpg", "image_metadata": metadata, **extra}


def test_group_field_is_read_from_the_metadata_or_the_top_level_and_required(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [row(1, "A", meta={"person": "p1"}), row(2, "A", person=7)])
    assert [r.group for r in read_records(path, group_field="person")] == ["p1", "7"]
    assert [r.group for r in read_records(path)] == [None, None]
    write_jsonl(path, [row(1, "A", meta={"person": "p1"}), row(2, "A")])
    with pytest.raises(RecordError, match=r"t.jsonl:2: missing group 'person'"):
        read_records(path, group_field="person")


@pytest.fixture
def image_set(tmp_path):
    """A local dataset: 8 distinct train pictures, 4 distinct val pictures, groups p0..p11."""
    from charfeat.data.sources.sample import STYLES, draw_figure

    (tmp_path / "images").mkdir()
    rng = random.Random(0)
    rows = {"train": [], "val": []}
    for i in range(12):
        split = "train" if i < 8 else "val"
        style = list(STYLES)[i % 4]
        draw_figure(style, 96, rng).save(tmp_path / "images" / f"r{i}.jpg", quality=92)
        rows[split].append(row(i, style, meta={"person": f"p{i}"}))
    return tmp_path, rows


def local_data(root, **values):
    return build(LocalDataConfig, root=str(root), **values)


def test_a_val_file_sharing_groups_with_train_is_an_error_naming_them(image_set, caplog):
    root, rows = image_set
    rows["val"][0]["image_metadata"]["person"] = "p3"  # the same person in both splits
    rows["val"][1]["image_metadata"]["person"] = "p5"
    for split in rows:
        write_jsonl(root / f"{split}.jsonl", rows[split])
    data = local_data(root, group_field="person")
    records = {split: data.records(split) for split in rows}
    with pytest.raises(LeakError, match=r"2 group\(s\) have records in both train and val") as error:
        check_leakage(data, records, "person", OnLeak.error, 0.97)
    assert "  p3: 1, 1" in str(error.value) and "  p5: 1, 1" in str(error.value)
    assert "data.on_leak=warn" in str(error.value)
    with caplog.at_level(logging.WARNING):
        report = check_leakage(data, records, "person", OnLeak.warn, 0.97)
    assert set(report.groups) == {"p3", "p5"} and "p3: 1, 1" in caplog.text
    assert not check_leakage(data, records, None, OnLeak.error, 0.97)  # no group_field: groups not checked


def reencoded(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_near_duplicates_across_splits_are_caught_and_different_pictures_are_not(image_set):
    root, rows = image_set
    images = root / "images"
    shutil.copy(images / "r0.jpg", images / "copy.jpg")  # an exact copy
    reencoded(Image.open(images / "r1.jpg"), 40).save(images / "reencoded.jpg", quality=95)
    Image.open(images / "r2.jpg").resize((48, 48), Image.Resampling.LANCZOS).save(images / "resized.png")
    ImageOps.mirror(Image.open(images / "r3.jpg")).save(images / "mirrored.jpg", quality=92)
    for n, name in enumerate(("copy.jpg", "reencoded.jpg", "resized.png", "mirrored.jpg")):
        rows["val"].append({"id": name, "image_filename": name, "image_metadata": {"fashion_style": "Casual_Basic"}})
    for split in rows:
        write_jsonl(root / f"{split}.jsonl", rows[split])
    data = local_data(root)
    records = {split: data.records(split) for split in rows}
    report = check_leakage(data, records, None, OnLeak.warn, 0.97)
    pairs = {(v.rsplit("/", 1)[1], t.rsplit("/", 1)[1]) for v, t, _ in report.duplicates}
    assert pairs == {("copy.jpg", "r0.jpg"), ("reencoded.jpg", "r1.jpg"), ("resized.png", "r2.jpg"),
                     ("mirrored.jpg", "r3.jpg")}
    with pytest.raises(LeakError, match=r"4 val image\(s\) nearly duplicate a train image") as error:
        check_leakage(data, records, None, OnLeak.error, 0.97)
    assert f"{images / 'resized.png'} ~ {images / 'r2.jpg'}" in str(error.value)
    assert not check_leakage(data, records, None, OnLeak.error, None)  # null: no image check


def test_the_sample_set_has_no_near_duplicates_at_the_default_threshold(cache_dir):
    from charfeat.config import RecordsConfig, SampleDataConfig

    data = build(SampleDataConfig, cache_dir=str(cache_dir / "sample_data"))
    records = {split: data.records(split) for split in ("train", "val")}
    report = check_leakage(data, records, None, OnLeak.error, RecordsConfig.duplicate_threshold)
    assert not report


def test_training_stops_on_leakage_before_the_backbone_is_built(image_set, compose_cfg, caplog):
    from charfeat.train import train

    root, rows = image_set
    rows["val"][0]["image_metadata"]["person"] = "p3"
    for split in rows:
        write_jsonl(root / f"{split}.jsonl", rows[split])
    with caplog.at_level(logging.INFO), pytest.raises(LeakError, match="p3: 1, 1"):
        train(compose_cfg("data=local", f"data.root={root}", "data.group_field=person", "logger=none"))
    assert "backbone:" not in caplog.text


def test_a_threshold_that_is_no_cosine_is_a_config_error(image_set):
    from charfeat.errors import ConfigError

    root, rows = image_set
    for split in rows:
        write_jsonl(root / f"{split}.jsonl", rows[split])
    data = local_data(root)
    with pytest.raises(ConfigError, match="data.duplicate_threshold must be a cosine"):
        check_leakage(data, {split: data.records(split) for split in rows}, None, OnLeak.error, 1.5)


def with_a_copy_of_r0_in_val(root, rows):
    shutil.copy(root / "images" / "r0.jpg", root / "images" / "copy.jpg")
    rows["val"].append({"id": "copy", "image_filename": "copy.jpg", "image_metadata": {"fashion_style": "Casual_Basic"}})
    for split in rows:
        write_jsonl(root / f"{split}.jsonl", rows[split])
    return root, rows


def test_unchanged_images_are_read_once_per_process_and_a_changed_one_again(image_set, monkeypatch):
    """A sweep's jobs check the same images: the up-front check and the duplicate search read each
    image once; an image rewritten since (new identity) is read again."""
    root, rows = with_a_copy_of_r0_in_val(*image_set)
    reads = []

    def job():
        data = local_data(root, verify_images="full")
        fetch = data.fetch
        monkeypatch.setattr(data, "fetch", lambda split, names: reads.extend(names) or fetch(split, names))
        records = {split: data.records(split) for split in rows}
        return check_leakage(data, records, None, OnLeak.warn, 0.97)

    first = job()
    assert len(reads) == 2 * 13  # checked, then fingerprinted
    reads.clear()
    assert job().duplicates == first.duplicates and len(first.duplicates) == 1 and reads == []
    Image.open(root / "images" / "r5.jpg").rotate(90).save(root / "images" / "r5.jpg", quality=92)
    job()
    assert reads.count("r5.jpg") == 2 and len(reads) == 1 + 13  # its check, then every fingerprint again


def test_a_new_process_reads_only_the_images_it_has_not_fingerprinted(image_set, tmp_path, monkeypatch):
    """data.fingerprint_cache keeps each image's fingerprints by identity across processes (a rerun,
    a SLURM sweep's jobs): the in-process memory is emptied here to play the new process."""
    import charfeat.data.leakage as leakage

    root, rows = with_a_copy_of_r0_in_val(*image_set)
    reads = []

    def new_process(cache_dir):
        monkeypatch.setattr(leakage, "_PAIRS", {})
        data = local_data(root, fingerprint_cache=cache_dir)
        records = {split: data.records(split) for split in rows}
        fetch = data.fetch
        monkeypatch.setattr(data, "fetch", lambda split, names: reads.extend(names) or fetch(split, names))
        return check_leakage(data, records, None, OnLeak.warn, 0.97, fingerprint_cache=cache_dir)

    uncached = new_process(None)
    assert len(reads) == 13 and len(uncached.duplicates) == 1
    cache_dir = str(tmp_path / "fingerprints")
    reads.clear()
    assert new_process(cache_dir).duplicates == uncached.duplicates and len(reads) == 13  # fills the cache
    reads.clear()
    assert new_process(cache_dir).duplicates == uncached.duplicates and reads == []
    Image.open(root / "images" / "r5.jpg").rotate(90).save(root / "images" / "r5.jpg", quality=92)
    assert new_process(cache_dir).duplicates == uncached.duplicates and reads == ["r5.jpg"]


def photo(rng: random.Random, style: str, size: tuple[int, int]) -> Image.Image:
    """A phone-photo-sized picture: a sample figure scaled up, with fine noise the scaling would smooth."""
    import numpy as np

    from charfeat.data.sources.sample import draw_figure

    base = np.asarray(draw_figure(style, 96, rng).resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    noise = np.random.default_rng(rng.randrange(1 << 30)).integers(-12, 13, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def test_big_jpegs_are_decoded_scaled_down_and_their_copies_still_caught(tmp_path):
    """A 2400x1800 JPEG is fingerprinted from a 1/8-scale decode (300x225); copies re-encoded,
    resized and mirrored still pass the default threshold, other pictures do not."""
    from charfeat.config import RecordsConfig
    from charfeat.data.images import decode
    from charfeat.data.leakage import DRAFT_SIDE, fingerprints
    from charfeat.data.sources.sample import STYLES

    rng = random.Random(1)
    (tmp_path / "images").mkdir()
    rows = {"train": [], "val": []}
    for i in range(6):
        photo(rng, list(STYLES)[i % 4], (2400, 1800)).save(tmp_path / "images" / f"r{i}.jpg", quality=90)
        rows["train"].append(row(i, list(STYLES)[i % 4]))
    original = Image.open(tmp_path / "images" / "r0.jpg")
    reencoded(original, 40).save(tmp_path / "images" / "reencoded.jpg", quality=95)
    original.resize((960, 720), Image.Resampling.LANCZOS).save(tmp_path / "images" / "resized.jpg", quality=85)
    ImageOps.mirror(Image.open(tmp_path / "images" / "r1.jpg")).save(tmp_path / "images" / "mirrored.jpg", quality=88)
    photo(rng, list(STYLES)[0], (2400, 1800)).save(tmp_path / "images" / "other.jpg", quality=90)
    for name in ("reencoded.jpg", "resized.jpg", "mirrored.jpg", "other.jpg"):
        rows["val"].append({"id": name, "image_filename": name, "image_metadata": {"fashion_style": "Casual_Basic"}})
    for split in rows:
        write_jsonl(tmp_path / f"{split}.jsonl", rows[split])
    blob = (tmp_path / "images" / "r0.jpg").read_bytes()
    assert decode(blob, at_least=DRAFT_SIDE).size == (300, 225) and decode(blob).size == (2400, 1800)

    data = local_data(tmp_path)
    records = {split: data.records(split) for split in rows}
    report = check_leakage(data, records, None, OnLeak.warn, RecordsConfig.duplicate_threshold)
    pairs = {(v.rsplit("/", 1)[1], t.rsplit("/", 1)[1]) for v, t, _ in report.duplicates}
    assert pairs == {("reencoded.jpg", "r0.jpg"), ("resized.jpg", "r0.jpg"), ("mirrored.jpg", "r1.jpg")}
    val, _ = fingerprints(data, "val", records["val"])
    train, _ = fingerprints(data, "train", records["train"])
    assert (val[3] @ train.T).max() < 0.9  # another picture of the same style is far below the threshold


def test_the_search_finds_exactly_the_pairs_above_the_threshold_whatever_its_blocks():
    """Blocks of val rows sized by the bytes of products they hold (1 row, 7 rows, all at once)."""
    import numpy as np

    from charfeat.data.leakage import near_duplicates

    rng = np.random.default_rng(0)

    def unit(x):
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    train = unit(rng.standard_normal((300, 768)))
    val, mirrored = unit(rng.standard_normal((50, 768))), unit(rng.standard_normal((50, 768)))
    val[7] = unit(train[12] + 0.005 * rng.standard_normal(768))  # a copy
    mirrored[20] = unit(train[3] + 0.005 * rng.standard_normal(768))  # a mirrored copy
    val[21], mirrored[21] = unit(train[4] + 0.001 * rng.standard_normal(768)), train[4]  # both ways: the higher
    sims = np.maximum(val @ train.T, mirrored @ train.T)
    expected = sorted(((int(i), int(j)) for i, j in zip(*np.nonzero(sims > 0.97))), key=lambda p: -sims[p])
    assert len(expected) == 3
    for block_bytes in (1, 8 * 300 * 7, 2**30):
        pairs = near_duplicates(val, mirrored, train, 0.97, block_bytes=block_bytes)
        assert [(i, j) for i, j, _ in pairs] == expected
        np.testing.assert_allclose([c for _, _, c in pairs], [sims[p] for p in expected], atol=1e-5)
