"""charfeat.upload against the live moto endpoint: it ships only the image folder's files and the
records training reads, never a file a JSONL line points elsewhere, never profile fields."""

import json

import pytest
from PIL import Image

from charfeat.data.records import read_records
from charfeat.upload import main as upload_main
from conftest import BUCKET

pytestmark = pytest.mark.slow


def row(i: int, filename: str, **extra) -> dict:
    return {"id": f"p{i}", "image_filename": filename,
            "image_metadata": {"fashion_style": "Casual_Basic", "caption": "A person.", "secret_score": 0.9},
            **extra}


def keys(moto_server, prefix: str) -> dict[str, bytes]:
    client = moto_server.client()
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix):]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


def run_upload(moto_server, images, jsonl, prefix, *extra):
    upload_main(["--images", str(images), "--jsonl", str(jsonl), "--bucket", BUCKET, "--prefix", prefix,
                 "--endpoint-url", moto_server.url, *extra])


def test_upload_never_ships_a_file_outside_the_image_folder(moto_server, s3_env, tmp_path, capsys):
    images = tmp_path / "dataset" / "images"
    images.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(images / "a.jpg")
    secret = tmp_path / "home" / ".aws" / "credentials"
    secret.parent.mkdir(parents=True)
    secret.write_text("[default]\naws_secret_access_key = hunter2\n")
    (images / "link.jpg").symlink_to(secret)
    jsonl = tmp_path / "dataset" / "train.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in [
        row(1, "a.jpg"), row(2, str(secret)), row(3, "../../home/.aws/credentials"), row(4, "link.jpg")]))
    run_upload(moto_server, images, jsonl, "esc/")
    uploaded = keys(moto_server, "esc/")
    assert set(uploaded) == {"a.jpg", "train.jsonl"}
    assert not any(b"hunter2" in body for body in uploaded.values())
    err = capsys.readouterr().err
    assert all(f"train.jsonl:{line}" in err for line in (2, 3, 4))


def test_upload_writes_the_records_training_reads_not_the_raw_file(moto_server, s3_env, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (8, 8)).save(images / name)
    jsonl = tmp_path / "train.jsonl"
    raw = [row(1, "a.jpg", profile={"name": "Jane Doe", "phone": "555-0100"}, timestamp="2024-01-01"),
           row(2, "b.jpg", profile={"name": "John Roe"})]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in raw))
    run_upload(moto_server, images, jsonl, "priv/")
    shipped = keys(moto_server, "priv/")["train.jsonl"]
    assert b"Jane Doe" not in shipped and b"555-0100" not in shipped and b"2024-01-01" not in shipped
    assert b"secret_score" not in shipped
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(shipped)
    assert read_records(copy) == read_records(jsonl)  # the same records, ids, filenames and labels

    run_upload(moto_server, images, jsonl, "raw/", "--keep-all-fields")
    assert keys(moto_server, "raw/")["train.jsonl"] == jsonl.read_bytes()
    assert "--keep-all-fields uploads every field" in capsys.readouterr().err
