"""A bare S3 prefix (no metadata) embeds like any other source, and search takes s3:// queries;
against the live moto endpoint."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from charfeat.config import S3PrefixDataConfig, build
from conftest import BUCKET
from trained_run import trained_run

pytestmark = pytest.mark.slow


def test_prefix_lists_every_image_and_loads_the_real_bytes(moto_server, small_sample, uploaded):
    data = build(S3PrefixDataConfig, bucket=BUCKET, prefix=uploaded, endpoint_url=moto_server.url, cache_dir=None)
    records = data.records("val")
    on_disk = sorted(p.name for p in (small_sample / "images").iterdir())
    assert [r.filename for r in records] == on_disk and all(r.label == "" for r in records)
    images = data.load_images("val", records[:3])
    for record, image in zip(records[:3], images):
        assert image.tobytes() == Image.open(small_sample / "images" / record.filename).convert("RGB").tobytes()


def test_empty_prefix_is_a_clear_error(moto_server, s3_env):
    with pytest.raises(FileNotFoundError, match="no images"):
        build(S3PrefixDataConfig, bucket=BUCKET, prefix="nothing-here/", endpoint_url=moto_server.url,
              cache_dir=None).records("val")


def test_embed_a_prefix_then_search_with_an_s3_query(moto_server, small_sample, uploaded, cache_dir, tmp_path):
    checkpoint = trained_run(cache_dir) / "checkpoints" / "last.pt"
    env = {**os.environ, "CHARFEAT_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}

    def run(module, *args):
        result = subprocess.run([sys.executable, "-m", module, f"checkpoint={checkpoint}", *args], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    run("charfeat.embed", "data=s3_prefix", f"data.bucket={BUCKET}", f"data.prefix={uploaded}",
        f"data.endpoint_url={moto_server.url}", "hydra.run.dir=index")
    items = [json.loads(line) for line in (tmp_path / "index" / "items.jsonl").read_text().splitlines()]
    assert len(items) == len(list((small_sample / "images").iterdir())) == len(np.load(tmp_path / "index" / "embeddings.npy"))
    assert all(item["label"] is None for item in items)

    query = items[5]
    run("charfeat.search", "index=index", f"query=s3://{BUCKET}/{uploaded}{query['filename']}",
        f"s3.endpoint_url={moto_server.url}", "k=2", "hydra.run.dir=found")
    hits = json.loads((tmp_path / "found" / "results.json").read_text())["hits"]
    assert hits[0]["id"] == query["id"] and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
