"""JSONL records: both schemas, every kind of bad record under both policies, filters, privacy, split,
and the preprocess command."""

import json
from pathlib import Path

import pytest

from charfeat.data.labels import build_label_map
from charfeat.config import LocalDataConfig, build
from charfeat.data.records import Issues, RecordError, read_records, text_input
from charfeat.data.split import stratified_split
from charfeat.preprocess import main as preprocess_main


def record(i: int, style: str | None = "Casual_Basic", **extra) -> dict:
    metadata = {"fashion_style": style, "shot_type": "Selfie_CloseUp", "visual_quality": "High",
                "physical_features": ["glasses"], "vibe_category": "Warm_Friendly"}
    row = {"id": f"aug_{i:05d}", "image_path": f"some/prefix/aug_{i:05d}.jpg", "image_filename": f"aug_{i:05d}.jpg",
           "image_metadata": {k: v for k, v in metadata.items() if v is not None}}
    row.update(extra)
    return row


def write(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


GOOD = [record(1), record(2, "Street_Hip")]
BAD_LINES = {  # kind -> (bad line, message fragment)
    "invalid json": ('{"id": "aug_00009", ', "invalid JSON"),
    "not an object": ("[1, 2]", "expected a JSON object"),
    "missing label": (record(9, None), "missing label 'fashion_style'"),
    "unknown label": (record(9, "Unknown"), "missing label 'fashion_style' (Unknown)"),
    "missing filename": ({k: v for k, v in record(9).items() if k not in ("image_path", "image_filename")},
                         "missing filename"),
    "missing id": ({k: v for k, v in record(9).items() if k != "id"}, "missing id"),
    "duplicate id": (record(1) | {"image_filename": "other.jpg"}, "duplicate id 'aug_00001' (first on line 1)"),
    "duplicate filename": (record(9) | {"image_filename": "aug_00001.jpg"},
                           "duplicate filename 'aug_00001.jpg' (first on line 1)"),
}


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_bad_record_is_an_error_naming_file_and_line(tmp_path, kind):
    line, fragment = BAD_LINES[kind]
    path = write(tmp_path / "train.jsonl", [*GOOD, line])
    with pytest.raises(RecordError, match=rf"train\.jsonl:3: .*{fragment[:20]}".replace("(", r"\(")) as err:
        read_records(path)
    assert fragment in str(err.value)


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_bad_record_is_skipped_and_counted_under_skip(tmp_path, kind):
    line, fragment = BAD_LINES[kind]
    path = write(tmp_path / "train.jsonl", [*GOOD, line])
    issues = Issues("skip")
    records = read_records(path, issues=issues)
    assert [r.id for r in records] == ["aug_00001", "aug_00002"]
    assert len(issues.skipped) == 1 and f"train.jsonl:3: {fragment}" in issues.skipped[0]


def test_empty_file_is_an_error_even_under_skip(tmp_path):
    for lines in ([], ["", "  "], ['{"broken'], [record(1, None)]):
        path = write(tmp_path / "train.jsonl", lines)
        with pytest.raises(RecordError, match="train.jsonl: no usable records"):
            read_records(path, issues=Issues("skip"))


def test_unknown_is_a_class_only_when_asked(tmp_path):
    path = write(tmp_path / "train.jsonl", [*GOOD, record(3, "Unknown")])
    assert read_records(path, keep_unknown=True)[-1].label == "Unknown"


def test_low_quality_is_filtered_not_an_error(tmp_path):
    low = record(3)
    low["image_metadata"]["visual_quality"] = "Low"
    path = write(tmp_path / "train.jsonl", [*GOOD, low])
    issues = Issues("error")
    assert len(read_records(path, issues=issues)) == 2
    assert issues.filtered == {"visual_quality Low": 1}
    assert len(read_records(path, drop_quality=())) == 3


def test_older_schema_derives_filenames_from_position_and_drops_private_keys(tmp_path):
    rows = [{"image_metadata": {"fashion_style": "Dandy_Minimal", "vibe_category": "Cool_Charismatic",
                                "secret_score": 3}, "timestamp": "2024-01-01", "profile": {"name": "Jane Doe"}},
            {"image_metadata": {"fashion_style": "Feminine_Romantic", "vibe_category": "Pure_Natural"},
             "confidence": 0.93}]
    path = write(tmp_path / "old.jsonl", rows)
    records = read_records(path, start_index=41)
    assert [(r.id, r.filename) for r in records] == [("aug_00041", "aug_00041.jpg"), ("aug_00042", "aug_00042.jpg")]
    assert "Jane Doe" not in repr(records) and "secret_score" not in repr(records) and "2024" not in repr(records)
    assert [r.label for r in read_records(path, "vibe_category")] == ["Cool_Charismatic", "Pure_Natural"]


def test_label_field_is_checked_and_selects_the_label(tmp_path):
    path = write(tmp_path / "train.jsonl", GOOD)
    assert {r.label for r in read_records(path, "shot_type")} == {"Selfie_CloseUp"}
    with pytest.raises(ValueError, match="data.label_field must be one of"):
        read_records(path, "fashion")


def test_text_input_follows_the_replaced_template():
    assert text_input({"fashion_style": "Chic_Modern", "physical_features": ["short hair", "glasses"],
                       "vibe_category": "Cool_Charismatic", "caption": "A person."}) == (
        "Style: Chic_Modern. Features: short hair, glasses. Vibe: Cool_Charismatic. Caption: A person.")
    assert text_input({}) == "Style: Unknown. Features: . Vibe: Unknown."


def test_stratified_split_is_seeded_and_keeps_every_class(tmp_path):
    rows = [record(i, "Casual_Basic") for i in range(40)] + [record(i, "Street_Hip") for i in range(40, 50)]
    records = read_records(write(tmp_path / "train.jsonl", rows))
    train, val = stratified_split(records, 0.2, seed=3)
    assert sorted(r.label for r in val).count("Casual_Basic") == 8 and len(val) == 10
    assert stratified_split(list(reversed(records)), 0.2, seed=3)[1] == sorted(val, key=lambda r: r.line,
                                                                                 reverse=True)
    assert not {r.id for r in train} & {r.id for r in val}


def make_local(tmp_path: Path, train: list, val: list | None, **options):
    (tmp_path / "images").mkdir(exist_ok=True)
    from PIL import Image

    for row in train + (val or []):
        if isinstance(row, dict) and row.get("image_filename"):
            Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "images" / row["image_filename"])
    write(tmp_path / "train.jsonl", train)
    if val is not None:
        write(tmp_path / "val.jsonl", val)
    return build(LocalDataConfig, root=str(tmp_path), val_jsonl="val.jsonl" if val is not None else None, **options)


def test_val_label_outside_the_mapping_is_an_error_or_skipped(tmp_path):
    val = [record(5), record(6, "Gothic_Dark")]
    with pytest.raises(RecordError, match=r"val\.jsonl:2: label 'Gothic_Dark' is not in the label mapping"):
        make_local(tmp_path, GOOD, val).records("train")
    data = make_local(tmp_path, GOOD, val, on_bad_record="skip")
    assert [r.id for r in data.records("val")] == ["aug_00005"]
    assert data.issue_summary() == {"data/skipped": 1, "data/filtered": 0}
    assert "val.jsonl:2" in data.describe_issues()


def test_missing_val_file_means_a_generated_split(tmp_path):
    rows = [record(i, ("Casual_Basic", "Street_Hip")[i % 2]) for i in range(20)]
    data = make_local(tmp_path, rows, None, val_fraction=0.2)
    assert len(data.records("train")) == 16 and len(data.records("val")) == 4
    assert build_label_map(data.records("val")) == build_label_map(data.records("train"))


def test_bad_policy_name_fails_at_construction(tmp_path):
    with pytest.raises(ValueError, match=r"expected one of \[error, skip\]"):
        build(LocalDataConfig, root=str(tmp_path), on_bad_record="ignore")
    with pytest.raises(ValueError, match="data.on_bad_record must be one of error, skip"):
        Issues("ignore")  # from Python, as preprocess and upload build it


def test_preprocess_writes_processed_file_and_sorted_mapping(tmp_path, capsys):
    rows = [{"image_metadata": {"fashion_style": style, "vibe_category": "Warm_Friendly", "visual_quality": q},
             "profile": {"phone": "555-0100"}} for style, q in
            [("Street_Hip", "High"), ("Casual_Basic", "Medium"), ("Chic_Modern", "Low"), ("Classy_Elegant", "High")]]
    write(tmp_path / "raw.jsonl", rows + ["not json"])
    out, mapping = tmp_path / "processed.jsonl", tmp_path / "label_mapping.json"
    with pytest.raises(SystemExit, match=r"raw\.jsonl:5: invalid JSON"):
        preprocess_main(["--input", str(tmp_path / "raw.jsonl"), "--output", str(out), "--mapping-output", str(mapping)])
    assert not out.exists()
    preprocess_main(["--input", str(tmp_path / "raw.jsonl"), "--output", str(out), "--mapping_output", str(mapping),
                     "--start_index", "7", "--on-bad-record", "skip"])
    assert json.loads(mapping.read_text()) == {"Casual_Basic": 0, "Classy_Elegant": 1, "Street_Hip": 2}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["filename"] for line in lines] == ["aug_00007.jpg", "aug_00008.jpg", "aug_00010.jpg"]
    assert lines[0]["text_input"] == "Style: Street_Hip. Features: . Vibe: Warm_Friendly."
    assert "555-0100" not in out.read_text()
    assert "skipped 1 bad record(s)" in capsys.readouterr().err
    # training reads processed files as it reads raw ones
    assert [r.filename for r in read_records(out)] == ["aug_00007.jpg", "aug_00008.jpg", "aug_00010.jpg"]


ESCAPES = ["/etc/passwd", "../../x.jpg", "images/../../x.jpg", "..\\x.jpg", "~/.aws/credentials"]


@pytest.mark.parametrize("name", ESCAPES)
def test_filename_outside_the_image_folder_is_a_record_error(tmp_path, name):
    path = write(tmp_path / "train.jsonl", [*GOOD, record(3) | {"image_filename": name}])
    with pytest.raises(RecordError, match=r"train\.jsonl:3: filename .* (absolute|'\.\.')"):
        read_records(path)
    issues = Issues("skip")
    assert [r.id for r in read_records(path, issues=issues)] == ["aug_00001", "aug_00002"]
    assert "train.jsonl:3" in issues.skipped[0]


def test_local_training_never_reads_a_file_outside_data_root(tmp_path):
    """A secret beside the dataset, named by a record (../) or reached through a symlink in images/."""
    from PIL import Image

    root = tmp_path / "dataset"
    root.mkdir()
    secret = tmp_path / "secret.jpg"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(secret)
    data = make_local(root, [*GOOD, record(3) | {"image_filename": "../../secret.jpg"}], [record(5)])
    with pytest.raises(RecordError, match=r"train\.jsonl:3: filename '\.\./\.\./secret\.jpg'"):
        data.records("train")
    (root / "images" / "link.jpg").symlink_to(secret)
    data = make_local(root, [*GOOD, record(3) | {"image_filename": "link.jpg"}], [record(5)], on_bad_record="skip")
    assert [r.id for r in data.records("train")] == ["aug_00001", "aug_00002"]
    assert "outside the image folder" in data.describe_issues() and "train.jsonl:3" in data.describe_issues()


def test_a_linked_subfolder_is_resolved_and_refused_when_it_leaves_the_image_folder(tmp_path):
    """Only the file's own name was a link above; a folder in the filename's path can be one too."""
    from PIL import Image

    root = tmp_path / "dataset"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(outside / "x.jpg")
    data = make_local(root, GOOD, [record(5)])
    (root / "images" / "sub").symlink_to(outside)
    assert data.missing("train", ["sub/x.jpg"]) == {
        "sub/x.jpg": f"resolves to {outside.resolve() / 'x.jpg'}, outside the image folder {data.folder}"}


def test_identity_is_the_resolved_path_and_stat_whether_or_not_a_link_is_on_the_way(tmp_path):
    """The cheap path (no link: one lstat per part) gives what a full resolve gives, so the feature
    cache finds the same entries; a link inside the folder names the file it points to."""
    import os

    from PIL import Image

    root = tmp_path / "dataset"
    root.mkdir()
    data = make_local(root, GOOD, [record(5)])
    images = root / "images"
    (images / "nested").mkdir()
    for name in ("a.jpg", "nested/b.jpg"):
        Image.new("RGB", (8, 8), (1, 2, 3)).save(images / name)
    (images / "link.jpg").symlink_to(images / "nested" / "b.jpg")
    (images / "linked").symlink_to(images / "nested")

    def by_realpath(name):
        st = os.stat(images / name)
        return f"file:{os.path.realpath(images / name)}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"

    for name in ("a.jpg", "nested/b.jpg", "./a.jpg", "link.jpg", "linked/b.jpg"):
        assert data.identity("train", name) == by_realpath(name), name
    assert data.identity("train", "link.jpg") == data.identity("train", "nested/b.jpg")
    assert data.identity("train", "absent.jpg") is None and data.identity("train", "nested/absent.jpg") is None
    assert data.missing("train", ["a.jpg", "link.jpg", "linked/b.jpg", "absent.jpg", "nested"]) == {
        "absent.jpg": "not found", "nested": "not found"}


def test_non_utf8_bytes_are_a_record_error_naming_the_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(json.dumps(GOOD[0]).encode() + b"\n" + b'{"id": "caf\xe9"}\n' + json.dumps(GOOD[1]).encode() + b"\n")
    with pytest.raises(RecordError, match=r"train\.jsonl:2: not UTF-8 \(byte 0xe9 at column 12\)"):
        read_records(path)
    issues = Issues("skip")
    assert [r.id for r in read_records(path, issues=issues)] == ["aug_00001", "aug_00002"]
    assert issues.skipped == [f"{path}:2: not UTF-8 (byte 0xe9 at column 12)"]


def test_utf8_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(row) + "\n" for row in GOOD).encode())
    assert [r.id for r in read_records(path)] == ["aug_00001", "aug_00002"]
