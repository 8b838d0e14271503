"""S3 as production buckets behave, against the live moto endpoint behind a proxy: a role that may
read but not list, ETags that are not MD5s, multipart objects, bodies corrupted in transit,
throttling that outlives the retry budget, a silent endpoint, an unwritable cache, and threads
that must end with the source."""

import io
import logging
import threading
import time
from pathlib import Path

import pytest

from charfeat.config import S3DataConfig, build
from charfeat.data.sources.base import ImageLoadError
from charfeat.data.sources.s3 import S3AccessError, S3TransientError
from charfeat.testing.s3 import FaultyProxy, SilentEndpoint
from conftest import BUCKET, tally

pytestmark = pytest.mark.slow


def s3_data(root: Path, prefix: str, url: str, **options):
    return build(S3DataConfig, bucket=BUCKET, root=str(root), prefix=prefix, endpoint_url=url,
                 **{"cache_dir": None, **options})


@pytest.fixture
def proxy(request, make_proxy):
    """A FaultyProxy with the test's options: ``@pytest.mark.parametrize("proxy", [{...}], indirect=True)``."""
    return make_proxy(**getattr(request, "param", {}))


def first_train_files(small_sample: Path, n: int) -> list[str]:
    import json

    return [json.loads(line)["image_filename"] for line in (small_sample / "train.jsonl").read_text().splitlines()[:n]]


def object_gets(proxy: FaultyProxy) -> list[str]:
    return [key for method, key, _ in proxy.requests if method == "GET" and key is not None]


# -- a role with s3:GetObject but no s3:ListBucket ---------------------------------------------------

@pytest.mark.parametrize("proxy", [{"deny_listing": True}], indirect=True)
def test_no_list_role_reports_missing_keys_per_object_and_follows_skip(moto_server, small_sample, uploaded, proxy,
                                                                      caplog):
    gone = first_train_files(small_sample, 2)
    for name in gone:
        moto_server.client().delete_object(Bucket=BUCKET, Key=uploaded + name)
    with caplog.at_level(logging.WARNING, logger="charfeat.data.sources.s3"):
        data = s3_data(small_sample, uploaded, proxy.url, on_bad_record="skip")
        assert len(data.records("train")) == 30 and len(data.records("val")) == 16
    assert [r.message for r in caplog.records].count(next(r.message for r in caplog.records
                                                          if "listing is not allowed" in r.message)) == 1
    report = data.describe_issues()
    assert all(f"{uploaded}{name} (id " in report for name in gone) and report.count("missing or not permitted") == 2

    with pytest.raises(ImageLoadError, match="2 train image.s. not found") as err:
        s3_data(small_sample, uploaded, proxy.url).records("train")
    assert not isinstance(err.value, S3AccessError) and str(err.value).count("missing or not permitted") == 2


@pytest.mark.parametrize("proxy", [{"deny_listing": True}], indirect=True)
def test_no_list_role_second_run_reads_the_disk_cache(moto_server, small_sample, uploaded, proxy, tmp_path):
    cache = str(tmp_path / "cache")
    first = s3_data(small_sample, uploaded, proxy.url, cache_dir=cache)
    records = first.records("train")
    first.load_images("train", records)
    assert len(object_gets(proxy)) >= 32
    proxy.requests.clear()
    second = s3_data(small_sample, uploaded, proxy.url, cache_dir=cache)
    images = second.load_images("train", second.records("train"))
    assert len(images) == 32 and object_gets(proxy) == []  # HEADs only: the cache answers every GET


@pytest.mark.parametrize("proxy", [{"deny_listing": True}], indirect=True)
def test_no_list_role_without_read_rights_is_one_clear_error(moto_server, small_sample, s3_env, proxy):
    with pytest.raises(S3AccessError, match="every one of 32 object.s. answered 403"):
        s3_data(small_sample, "nothing-here/", proxy.url, on_bad_record="skip").records("train")


# -- integrity: what botocore verifies, and the MD5 only where it is one ------------------------------

def put_without_checksum(moto_server, key: str, body: bytes) -> None:
    """As MinIO, R2 or an older SDK stores it: no x-amz-checksum, only an ETag."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=moto_server.url, region_name="us-east-1",
                          config=Config(request_checksum_calculation="when_required"),
                          aws_access_key_id=moto_server.credentials["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=moto_server.credentials["AWS_SECRET_ACCESS_KEY"])
    client.put_object(Bucket=BUCKET, Key=key, Body=body)
    assert "ChecksumCRC32" not in client.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")


def put_multipart(moto_server, key: str, body: bytes, checksum_type: str) -> None:
    client = moto_server.client()
    upload = client.create_multipart_upload(Bucket=BUCKET, Key=key, ChecksumAlgorithm="CRC32",
                                            ChecksumType=checksum_type)
    half = len(body) // 2
    parts = []
    for number, part in enumerate((body[:half], body[half:]), start=1):
        done = client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=part,
                                  ChecksumAlgorithm="CRC32")
        parts.append({"PartNumber": number, "ETag": done["ETag"], "ChecksumCRC32": done["ChecksumCRC32"]})
    extra = {"ChecksumType": checksum_type} if checksum_type == "FULL_OBJECT" else {}
    client.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": parts}, **extra)


def photo(small_sample: Path, name: str, pad: int = 0) -> bytes:
    """A sample JPEG, padded after its end (as some cameras write it) to span two multipart parts."""
    return (small_sample / "images" / name).read_bytes() + b"\0" * pad


@pytest.mark.parametrize("validation", ["when_supported", "when_required"])
def test_multipart_object_is_verified_by_its_full_object_checksum(moto_server, small_sample, s3_env, monkeypatch,
                                                                  make_proxy, validation):
    """Also where the AWS config only validates checksums when asked (as set for some third-party stores)."""
    monkeypatch.setenv("AWS_RESPONSE_CHECKSUM_VALIDATION", validation)
    name = first_train_files(small_sample, 1)[0]
    body = photo(small_sample, name, pad=12 * 1024)
    put_multipart(moto_server, f"mp/{name}", body, "FULL_OBJECT")
    assert moto_server.client().head_object(Bucket=BUCKET, Key=f"mp/{name}")["ETag"].endswith('-2"')
    proxy = make_proxy(scripts={f"mp/{name}": ["corrupt"]})
    data = s3_data(small_sample, "mp/", proxy.url)
    assert data.fetch("train", [name]) == [body]  # the flipped byte was caught and the object fetched again
    assert proxy.counts["corrupt"] == 1 and object_gets(proxy) == [f"mp/{name}"] * 2
    tally(images=1)


@pytest.mark.parametrize("proxy", [{"etag_not_md5": True}], indirect=True)
def test_etag_that_is_not_an_md5_is_not_treated_as_one(moto_server, small_sample, s3_env, proxy, caplog):
    names = first_train_files(small_sample, 3)
    for name in names:
        put_without_checksum(moto_server, f"minio/{name}", photo(small_sample, name))
    data = s3_data(small_sample, "minio/", proxy.url)
    with caplog.at_level(logging.WARNING, logger="charfeat.data.sources.s3_object"):
        assert data.fetch("train", names[:1]) == [photo(small_sample, names[0])]
        assert data.fetch("train", names[1:]) == [photo(small_sample, name) for name in names[1:]]
    tally(images=3)
    assert sum("ETags are not MD5s" in r.message for r in caplog.records) == 1
    assert len(object_gets(proxy)) == 4  # the first object twice (to tell a non-MD5 ETag from a broken body)


def test_md5_etag_catches_a_corrupt_body_without_a_checksum(moto_server, small_sample, s3_env, make_proxy):
    """No checksum on the object, and the GET response carries no ETag: the listing's ETag is the MD5."""
    name = first_train_files(small_sample, 1)[0]
    put_without_checksum(moto_server, f"plain/{name}", photo(small_sample, name))
    proxy = make_proxy(scripts={f"plain/{name}": ["corrupt"]}, hide_etag=True)
    data = s3_data(small_sample, "plain/", proxy.url)
    assert not data.missing("train", [name])  # lists the prefix: the ETags come from the listing
    assert data.fetch("train", [name]) == [photo(small_sample, name)]
    assert proxy.counts["corrupt"] == 1 and object_gets(proxy) == [f"plain/{name}"] * 2
    tally(images=1)


# -- transient is not bad; one budget per object; bounded waits ---------------------------------------

def test_throttling_past_the_budget_fails_the_run_even_under_skip(small_sample, uploaded, make_proxy):
    name = first_train_files(small_sample, 1)[0]
    proxy = make_proxy(scripts={uploaded + name: ["503"] * 50})
    data = s3_data(small_sample, uploaded, proxy.url, on_bad_record="skip", max_attempts=3)
    with pytest.raises(S3TransientError, match=rf"{uploaded}{name}: still failing after its retry budget"):
        data.records("train")


def test_heavy_faults_never_drop_an_image(small_sample, uploaded, make_proxy):
    """Half of all requests fail: every image comes back exact, or the run stops; none is skipped."""
    proxy = make_proxy(fault_rate=0.5, seed=3)
    data = s3_data(small_sample, uploaded, proxy.url, on_bad_record="skip", max_attempts=12, verify_images="full")
    try:
        records = data.records("train") + data.records("val")
    except S3TransientError:
        records = None
    assert data.issue_summary()["data/skipped"] == 0
    if records is not None:
        assert len(records) == 48
        for split in ("train", "val"):
            names = [r.filename for r in data.records(split)]
            assert data.fetch(split, names) == [(small_sample / "images" / n).read_bytes() for n in names]
        tally(images=48, run=True)
    assert proxy.counts["ok"] < sum(proxy.counts.values()) * 0.6


def test_retries_do_not_multiply(small_sample, uploaded, make_proxy):
    """botocore retries a 503, charfeat re-fetches a cut-off body: together at most max_attempts requests."""
    name = first_train_files(small_sample, 1)[0]
    proxy = make_proxy(scripts={uploaded + name: ["503", "503", "truncate"] * 10})
    data = s3_data(small_sample, uploaded, proxy.url, max_attempts=4)
    with pytest.raises(S3TransientError, match=r"4 request.s. .data.max_attempts. spent"):
        data.fetch("train", [name])
    assert object_gets(proxy) == [uploaded + name] * 4


def test_object_deadline_bounds_a_slow_failing_object(small_sample, uploaded, make_proxy):
    name = first_train_files(small_sample, 1)[0]
    proxy = make_proxy(latency=0.4, scripts={uploaded + name: ["503"] * 50})
    data = s3_data(small_sample, uploaded, proxy.url, max_attempts=50, object_deadline_s=1.0)
    started = time.monotonic()
    with pytest.raises(S3TransientError, match=r"data.object_deadline_s=1 passed"):
        data.fetch("train", [name])
    assert time.monotonic() - started < 3


def test_silent_endpoint_fails_the_listing_in_seconds(small_sample, s3_env):
    silent = SilentEndpoint()
    try:
        started = time.monotonic()
        with pytest.raises(S3AccessError, match="accepts connections but does not answer"):
            s3_data(small_sample, "images/", silent.url, read_timeout=1.0).records("train")
        assert time.monotonic() - started < 4
    finally:
        silent.stop()
    from charfeat.config import S3StoreConfig

    assert S3StoreConfig.read_timeout <= 5 and S3StoreConfig.connect_timeout <= 5  # the listing's bound by default


def test_unwritable_cache_warns_and_goes_on(moto_server, small_sample, uploaded, tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache should go")
    with caplog.at_level(logging.WARNING, logger="charfeat.data.sources.s3_object_cache"):
        data = s3_data(small_sample, uploaded, moto_server.url, cache_dir=str(blocker / "s3"))
        records = data.records("train")
        assert len(data.load_images("train", records)) == 32
    assert sum("cannot be written" in r.message for r in caplog.records) == 1


# -- threads end with the source ----------------------------------------------------------------------

def charfeat_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("charfeat")]


def test_closing_the_source_ends_its_threads_and_cancels_read_ahead(small_sample, uploaded, make_proxy):
    proxy = make_proxy(latency=0.05)
    with s3_data(small_sample, uploaded, proxy.url, prefetch=24, max_workers=2) as data:
        records = data.records("train")
        proxy.requests.clear()
        data.load_images("train", records[:4])  # starts reading the next 24 ahead
        assert charfeat_threads() and data._pending
        pending = list(data._pending.values())
    assert charfeat_threads() == [] and data._pending == {}
    assert any(future.cancelled() for future in pending)
    assert len(object_gets(proxy)) < 28  # cancelled read-ahead never reached the server


def test_no_charfeat_thread_outlives_a_training_run(compose_cfg, moto_server, small_sample, uploaded, tmp_path):
    from charfeat.train import train

    train(compose_cfg("data=s3", f"data.bucket={BUCKET}", f"data.prefix={uploaded}", f"data.root={small_sample}",
                      f"data.endpoint_url={moto_server.url}", f"data.cache_dir={tmp_path / 'c'}", "logger=none",
                      "trainer.epochs=1", "trainer.plots=false", "sampler.p=4", "sampler.k=4"))
    assert charfeat_threads() == []
