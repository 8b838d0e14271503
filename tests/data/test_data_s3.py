"""S3 images against a live endpoint (moto's server over HTTP, credentials enforced): missing and
corrupt objects under both policies, injected faults, wrong credentials, no endpoint, the disk
cache, pickling and fork, and a full training run."""

import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from charfeat.config import S3DataConfig, build
from charfeat.data.records import RecordError
from charfeat.data.sources.s3 import S3AccessError, S3Data
from charfeat.data.sources.base import ImageLoadError
from conftest import BUCKET, tally
from charfeat.testing.s3 import free_port

pytestmark = pytest.mark.slow


def s3_data(root: Path, prefix: str, url: str, **options) -> S3Data:
    """data=s3 as configured, on the test server, no disk cache unless given; ``options`` on top."""
    return build(S3DataConfig, bucket=BUCKET, root=str(root), prefix=prefix, endpoint_url=url,
                 **{"cache_dir": None, **options})


def assert_real(root: Path, records, images) -> None:
    for record, image in zip(records, images, strict=True):
        expected = Image.open(root / "images" / record.filename).convert("RGB")
        assert image.tobytes() == expected.tobytes(), record.id
    tally(images=len(records))


def test_images_come_back_exactly_through_cache_and_readahead(moto_server, small_sample, uploaded, tmp_path):
    data = s3_data(small_sample, uploaded, moto_server.url, cache_dir=str(tmp_path / "cache"), prefetch=8)
    records = data.records("train")
    assert len(records) == 32 and len(data.records("val")) == 16
    for start in range(0, len(records), 8):  # batch by batch, as feature extraction reads
        assert_real(small_sample, records[start:start + 8], data.load_images("train", records[start:start + 8]))
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(entries) == 48  # the up-front check (data.verify_images=header) fetched train and val

    # a corrupt cache entry is detected and fetched again
    entries[0].write_bytes(entries[0].read_bytes()[:-5])
    warm = s3_data(small_sample, uploaded, moto_server.url, cache_dir=str(tmp_path / "cache"))
    assert_real(small_sample, warm.records("train"), warm.load_images("train", warm.records("train")))

    # a copy (as sent to a worker) and a forked process each make their own client
    copy = pickle.loads(pickle.dumps(data))
    assert copy._client is None
    assert_real(small_sample, records[:4], copy.load_images("train", records[:4]))
    with multiprocessing.get_context("fork").Pool(1) as pool:
        sizes = pool.apply(_load_sizes, (data, records[:4]))
    assert sizes == [(64, 64)] * 4


def _load_sizes(data, records):
    return [image.size for image in data.load_images("train", records)]


def damage(moto_server, prefix: str, small_sample: Path) -> dict[str, str]:
    """Delete two train objects and replace two with a truncated JPEG and garbage; return id -> what."""
    records = [json.loads(line) for line in (small_sample / "train.jsonl").read_text().splitlines()]
    client = moto_server.client()
    (missing1, missing2, truncated, garbage) = [r["image_filename"] for r in records[:4]]
    client.delete_object(Bucket=BUCKET, Key=prefix + missing1)
    client.delete_object(Bucket=BUCKET, Key=prefix + missing2)
    jpeg = (small_sample / "images" / truncated).read_bytes()
    client.put_object(Bucket=BUCKET, Key=prefix + truncated, Body=jpeg[:len(jpeg) // 2])
    client.put_object(Bucket=BUCKET, Key=prefix + garbage, Body=b"not an image at all")
    return {Path(missing1).stem: "missing", Path(missing2).stem: "missing",
            Path(truncated).stem: "corrupt", Path(garbage).stem: "corrupt"}


def test_missing_and_corrupt_objects_are_errors_listing_each(moto_server, small_sample, uploaded):
    damaged = damage(moto_server, uploaded, small_sample)
    data = s3_data(small_sample, uploaded, moto_server.url)
    with pytest.raises(ImageLoadError) as err:
        data.records("train")
    for record_id, what in damaged.items():
        assert (f"s3://{BUCKET}/{uploaded}{record_id}.jpg (id {record_id})" in str(err.value)) == (what == "missing")
    assert "2 train image(s) not found" in str(err.value)

    records = s3_data(small_sample, uploaded, moto_server.url, val_jsonl="val.jsonl")
    corrupt = [rid for rid, what in damaged.items() if what == "corrupt"]
    from charfeat.data.records import read_records

    rows = [r for r in read_records(small_sample / "train.jsonl") if r.id in corrupt]
    with pytest.raises(ImageLoadError, match="2 image.s. could not be decoded") as err:
        records.load_images("train", rows)
    assert all(f"(id {rid})" in str(err.value) for rid in corrupt)


def test_missing_and_corrupt_objects_are_skipped_and_reported_by_id(moto_server, small_sample, uploaded):
    damaged = damage(moto_server, uploaded, small_sample)
    data = s3_data(small_sample, uploaded, moto_server.url, on_bad_record="skip")
    records = data.records("train")
    assert len(records) == 28 and not {r.id for r in records} & set(damaged)
    assert_real(small_sample, records, data.load_images("train", records))
    assert data.issue_summary()["data/skipped"] == 4
    report = data.describe_issues()
    assert all(f"(id {rid})" in report for rid in damaged)


def test_transient_faults_are_retried_and_every_image_is_real(moto_server, small_sample, uploaded, faulty_proxy,
                                                              tmp_path):
    data = s3_data(small_sample, uploaded, faulty_proxy.url, max_attempts=8, cache_dir=str(tmp_path / "c"))
    for split in ("train", "val"):
        records = data.records(split)
        assert_real(small_sample, records, data.load_images(split, records))
        tally(run=True)
    counts = faulty_proxy.counts
    assert min(counts["500"], counts["503"], counts["reset"], counts["truncate"]) >= 1, counts


def test_wrong_credentials_fail_fast_and_say_so(moto_server, small_sample, uploaded, monkeypatch):
    secret = "definitely-not-the-secret-key"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    started = time.monotonic()
    with pytest.raises(S3AccessError, match="S3 refused the request .SignatureDoesNotMatch.") as err:
        s3_data(small_sample, uploaded, moto_server.url).records("train")
    assert time.monotonic() - started < 5 and secret not in str(err.value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    with pytest.raises(S3AccessError, match="InvalidAccessKeyId"):
        s3_data(small_sample, uploaded, moto_server.url).records("train")


def test_unreachable_endpoint_fails_fast_and_says_so(small_sample, s3_env):
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(S3AccessError, match=f"cannot reach the S3 endpoint {url}"):
        s3_data(small_sample, "images/", url).records("train")
    assert time.monotonic() - started < 5


def test_endpoint_with_credentials_in_it_is_refused(small_sample):
    with pytest.raises(ValueError, match="must not carry credentials"):
        s3_data(small_sample, "", "http://key:secret@127.0.0.1:9000")


def test_bad_metadata_fails_before_any_request(small_sample, tmp_path, s3_env):
    (tmp_path / "train.jsonl").write_text((small_sample / "train.jsonl").read_text() + '{"id": \n')
    with pytest.raises(RecordError, match=r"train\.jsonl:33: invalid JSON"):
        s3_data(tmp_path, "", "http://127.0.0.1:1", val_jsonl=None).records("train")


def test_train_end_to_end_from_s3_uploaded_with_the_upload_command(moto_server, small_sample, s3_env, faulty_proxy,
                                                                   cache_dir, tmp_path):
    env = {**os.environ, "CHARFEAT_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    prefix = "e2e/characters/augmented/generated/"
    upload = subprocess.run(
        [sys.executable, "-m", "charfeat.upload", "--images", str(small_sample / "images"), "--jsonl",
         str(small_sample / "train.jsonl"), str(small_sample / "val.jsonl"), "--bucket", BUCKET, "--prefix", prefix,
         "--endpoint-url", moto_server.url], env=env, capture_output=True, text=True, timeout=120)
    assert upload.returncode == 0, upload.stderr
    assert "50 uploaded" in upload.stderr  # 48 images and 2 JSONL files

    result = subprocess.run(
        [sys.executable, "-m", "charfeat.train", "data=s3", f"data.bucket={BUCKET}", f"data.prefix={prefix}",
         f"data.root={small_sample}", f"data.endpoint_url={faulty_proxy.url}", "data.max_attempts=8",
         "logger=none", "trainer.epochs=1", "sampler.p=4", "sampler.k=4", "hydra.run.dir=out"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "out"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["trained"]["precision_at_1"] <= 1.0
    assert sum(faulty_proxy.counts.values()) > 48 and faulty_proxy.counts["ok"] < sum(faulty_proxy.counts.values())
    tally(run=True)
    config = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["config"]
    assert config["data"]["endpoint_url"] == faulty_proxy.url
    for secret in s3_env.values():  # credentials reach no file the run wrote, nor its output
        assert secret not in result.stdout + result.stderr
        for path in run_dir.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def test_a_second_run_finds_every_feature_by_etag_without_a_get(moto_server, small_sample, uploaded, make_proxy,
                                                                compose_cfg, tmp_path):
    """The jobs of a sweep: the first reads every object; the next finds each image's feature by its
    key and ETag (from the listing), its up-front checks by the same identity, and sends no GET.
    An object uploaded again with other bytes (a new ETag) is read again."""
    from charfeat.train import train

    proxy = make_proxy(fault_rate=0.0)
    cfg = ("data=s3", f"data.bucket={BUCKET}", f"data.prefix={uploaded}", f"data.root={small_sample}",
           f"data.endpoint_url={proxy.url}", "data.cache_dir=null", "logger=none", "trainer.epochs=1",
           "sampler.p=4", "sampler.k=4", "trainer.plots=false", "data.verify_images=header",
           f"backbone.feature_cache={tmp_path / 'features'}")
    gets = lambda: [key for method, key, _ in proxy.requests if method == "GET" and key]  # noqa: E731
    first = train(compose_cfg(*cfg))
    assert len(set(gets())) == 48
    proxy.requests.clear()
    second = train(compose_cfg(*cfg))
    assert second["trained"] == first["trained"]
    suspects = [json.loads(line) for line in (tmp_path / "run" / "suspects.jsonl").read_text().splitlines()]
    shown = {uploaded + n["filename"] for s in suspects for n in [s, *s["neighbours"]]}
    assert set(gets()) <= shown  # only report.html's thumbnails of suspects and their neighbours

    name = json.loads((small_sample / "train.jsonl").read_text().splitlines()[0])["image_filename"]
    image = Image.open(small_sample / "images" / name).rotate(90)
    body = __import__("io").BytesIO()
    image.save(body, "JPEG", quality=90)
    moto_server.client().put_object(Bucket=BUCKET, Key=uploaded + name, Body=body.getvalue())
    proxy.requests.clear()
    train(compose_cfg(*cfg))
    assert uploaded + name in gets()  # (and the duplicate check, whose images changed, reads them all again)
