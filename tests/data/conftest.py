"""A live S3 endpoint (moto's server, credentials enforced) and a small sample set uploaded to it.

The server is started once per session; each test gets its own key prefix, so tests that delete
or corrupt objects do not disturb the others.
"""

import itertools
from collections import Counter
from pathlib import Path

import pytest

from charfeat.testing.s3 import FaultyProxy, MotoServer

BUCKET = "charfeat-test"
_prefixes = itertools.count()
# What the fault-injecting tests did, summed over the session and printed at its end (README: Data, S3)
RELIABILITY = {"requests": 0, "faults": Counter(), "runs": 0, "images": 0}


def tally(proxy=None, images: int = 0, run: bool = False) -> None:
    """Count a proxy's requests and faults, images compared byte for byte with their originals,
    and runs (a split or a training run read through injected faults) that completed."""
    if proxy is not None:
        RELIABILITY["requests"] += sum(proxy.counts.values())
        RELIABILITY["faults"].update({k: v for k, v in proxy.counts.items() if k != "ok" and v})
    RELIABILITY["images"] += images
    RELIABILITY["runs"] += run


def pytest_terminal_summary(terminalreporter):
    if RELIABILITY["requests"]:
        faults = RELIABILITY["faults"]
        terminalreporter.write_line(
            f"S3 reliability: {sum(faults.values())} faults injected in {RELIABILITY['requests']} requests "
            f"({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))}); {RELIABILITY['runs']} runs through "
            f"faults completed; {RELIABILITY['images']} images verified identical to their originals; "
            "0 substituted (a substitute fails the test)")


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer(min_part_size=5 * 1024)  # multipart tests use small images
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def small_sample(cache_dir) -> Path:
    """4 classes, 8 train and 4 val images each, 64 px: generated once per session."""
    from charfeat.config import SampleDataConfig, build

    data = build(SampleDataConfig, cache_dir=str(cache_dir / "sample_data"), num_classes=4, train_per_class=8,
                 val_per_class=4, image_size=64)
    return data.ensure_generated()


@pytest.fixture
def s3_env(moto_server, monkeypatch, tmp_path):
    """boto3's chain sees only the server's key pair, from the environment."""
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    for name, value in moto_server.credentials.items():
        monkeypatch.setenv(name, value)
    return moto_server.credentials


@pytest.fixture
def uploaded(moto_server, small_sample, s3_env) -> str:
    """A fresh prefix holding the small sample's images; returns the prefix."""
    from charfeat.upload import plan, upload

    prefix = f"run{next(_prefixes)}/images/"
    files = plan(small_sample / "images", [small_sample / "train.jsonl", small_sample / "val.jsonl"],
                 "fashion_style", 0)
    upload(files, BUCKET, prefix, moto_server.client())
    return prefix


@pytest.fixture
def faulty_proxy(moto_server):
    proxy = FaultyProxy(moto_server.port, fault_rate=0.25, seed=1)
    yield proxy
    proxy.stop()
    tally(proxy)


@pytest.fixture
def make_proxy(moto_server):
    """make_proxy(**options) -> a FaultyProxy in front of the server, stopped (and tallied) after the test."""
    made = []
    yield lambda **options: made.append(FaultyProxy(moto_server.port, **options)) or made[-1]
    for proxy in made:
        proxy.stop()
        tally(proxy)
