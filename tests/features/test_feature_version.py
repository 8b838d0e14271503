"""The feature cache is keyed by FEATURE_VERSION: a change to what a frozen feature is (chat template,
processor settings, decoding, pooling) must bump it, or stale cached features would be reused.

The features of a fixed input, computed by the tiny model, are recorded in ``feature_golden.json``
with the FEATURE_VERSION they belong to. A different feature under the same version fails here: bump
FEATURE_VERSION, then record again with ``CHARFEAT_RECORD_FEATURES=1 pytest tests/features/test_feature_version.py``.
Recorded per torch and transformers version (the model itself may compute differently under
others; the cache key holds both versions); under a pair with no recording the comparison is
skipped. Record a new pair only on code whose features the existing recordings still pass.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from charfeat.features.cache import FeatureCache
from charfeat.models.backbone import model as backbone_model
from configured import tiny_backbone

GOLDEN = Path(__file__).with_name("feature_golden.json")
CASES = {"mean": {}, "last": {"text": "caption"}, "vision": {"pooling": "vision"}, "layer1": {"layer": 1}}
RECORD = os.environ.get("CHARFEAT_RECORD_FEATURES") == "1"


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> dict[str, list[float]]:
    """The first 8 values of the fixed input's feature, per pooling case, on a freshly built tiny model."""
    from charfeat.models.backbone.tiny import build_tiny_qwen3_vl

    torch.set_num_threads(1)
    path = build_tiny_qwen3_vl(tmp_path_factory.mktemp("models") / "tiny")
    image = Image.fromarray(np.random.default_rng(7).integers(0, 256, (80, 112, 3), dtype=np.uint8))
    out = {}
    for name, values in CASES.items():
        backbone = tiny_backbone(path, **({"pooling": "last"} if name == "last" else {}), **values)
        text = "Caption: a fixed caption." if values.get("text") else None
        out[name] = backbone(**backbone.preprocess([image], [text]))[0, :8].tolist()
    return out


def versions() -> dict:
    return {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}


def test_a_changed_feature_comes_with_a_new_feature_version(features):
    golden = json.loads(GOLDEN.read_text())
    if RECORD:  # one recording per torch/transformers pair; a new FEATURE_VERSION starts afresh
        kept = [r for r in golden["recordings"] if golden["feature_version"] == backbone_model.FEATURE_VERSION
                and {k: r[k] for k in versions()} != versions()]
        golden = {"feature_version": backbone_model.FEATURE_VERSION,
                  "recordings": [*kept, {**versions(), "features": features}]}
        GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")
    recorded = [r["features"] for r in golden["recordings"] if {k: r[k] for k in versions()} == versions()]
    if not recorded:
        pytest.skip(f"no recording under {versions()} (record with CHARFEAT_RECORD_FEATURES=1 on the code that "
                    f"recorded the others: {[{k: r[k] for k in versions()} for r in golden['recordings']]})")
    assert golden["feature_version"] == backbone_model.FEATURE_VERSION, (
        "FEATURE_VERSION changed: record the new features (CHARFEAT_RECORD_FEATURES=1)")
    for name, values in recorded[0].items():
        assert features[name] == pytest.approx(values, rel=1e-4, abs=1e-5), (
            f"the {name} feature of the fixed input changed but FEATURE_VERSION is still "
            f"{backbone_model.FEATURE_VERSION}: bump it (cached features of the old code must not be reused)")


def test_the_cache_key_holds_the_feature_version_and_library_versions(tiny_cache_backbone, monkeypatch, tmp_path):
    fingerprint = tiny_cache_backbone.feature_fingerprint()
    assert fingerprint["feature_code"] == backbone_model.FEATURE_VERSION
    assert fingerprint["torch"] == torch.__version__ and fingerprint["transformers"] == transformers.__version__
    before = FeatureCache(tmp_path, fingerprint, dim=4).dir
    monkeypatch.setattr(backbone_model, "FEATURE_VERSION", backbone_model.FEATURE_VERSION + 1)
    assert FeatureCache(tmp_path, tiny_cache_backbone.feature_fingerprint(), dim=4).dir != before


@pytest.fixture(scope="module")
def tiny_cache_backbone(tmp_path_factory):
    from charfeat.models.backbone.tiny import build_tiny_qwen3_vl

    return tiny_backbone(build_tiny_qwen3_vl(tmp_path_factory.mktemp("models") / "tiny"))
