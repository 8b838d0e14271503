"""Finding a backbone's files before loading: a directory as is; a hub id through one bounded request
to the hub (a local stand-in here), or from the Hugging Face cache when the hub cannot be reached."""

import json
import shutil
import socket
from pathlib import Path

import pytest
from huggingface_hub import constants

from charfeat.config import BackboneConfig, build
from charfeat.models.backbone import hub
from charfeat.models.backbone.hub import ModelNotAvailable, check_available, local_snapshot
from charfeat.testing.hub import COMMIT, FakeHub

REPO = "charfeat-test/tiny-qwen3-vl"


@pytest.fixture
def hf(monkeypatch, tmp_path):
    """hf(endpoint, offline=False): huggingface_hub sees this endpoint and an empty cache of this test's own."""

    def point(endpoint: str, offline: bool = False) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)

    return point


@pytest.fixture
def closed_port():
    """A local port nothing listens on: connecting is refused at once, as on a node without a route."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_directory_is_used_as_it_is(tiny_path, hf, closed_port):
    hf(f"http://127.0.0.1:{closed_port}")
    assert local_snapshot(str(tiny_path), None) == str(tiny_path)


@pytest.fixture
def hub_repo(tiny_path, tmp_path) -> Path:
    """The tiny model as a hub repo holds it: with a README, which charfeat does not fetch."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny_path, repo)
    (repo / "README.md").write_text("# a model card\n")
    return repo


def test_reachable_hub_fills_the_cache_and_the_backbone_then_loads_offline(hub_repo, hf, closed_port, monkeypatch):
    with FakeHub({REPO: hub_repo}) as fake:
        hf(fake.endpoint)
        folder = local_snapshot(REPO, None)
        assert folder.endswith(f"snapshots/{COMMIT}")
        assert any(request.startswith("GET /api/models/" + REPO) for request in fake.requests)
    hf(f"http://127.0.0.1:{closed_port}", offline=True)  # the hub gone, downloads off
    monkeypatch.setattr(hub, "hub_unreachable", lambda *a: "offline in this test")
    backbone = build(BackboneConfig, name_or_path=REPO, dtype="float32", max_pixels=None, feature_cache=None)
    hidden = json.loads((hub_repo / "config.json").read_text())["text_config"]["hidden_size"]
    assert backbone.name_or_path == REPO and backbone.hidden_size == hidden
    assert not (Path(folder) / "README.md").exists()
    assert backbone.feature_fingerprint()["revision"] == f"commit:{COMMIT}"  # found without the README it skipped


def test_a_downloaded_directorys_bookkeeping_does_not_change_its_fingerprint(tiny_path, tmp_path):
    from charfeat.models.backbone.revision import model_revision

    copy = tmp_path / "copy"
    shutil.copytree(tiny_path, copy)
    before = model_revision(str(copy))
    (copy / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (copy / ".cache" / "huggingface" / "download" / "config.json.metadata").write_text("commit\netag\n1.5\n")
    assert model_revision(str(copy)) == before


def test_unreachable_hub_uses_the_cached_snapshot(tiny_path, hf, closed_port):
    with FakeHub({REPO: tiny_path}) as fake:
        hf(fake.endpoint)
        fetched = local_snapshot(REPO, None)
    hf(f"http://127.0.0.1:{closed_port}")
    assert local_snapshot(REPO, None) == fetched
    check_available(REPO, None, build_random=None)  # no error either


@pytest.mark.parametrize("offline", [False, True])
def test_missing_model_without_the_hub_says_what_to_do(hf, closed_port, offline, monkeypatch):
    hf(f"http://127.0.0.1:{closed_port}", offline=offline)
    if offline:  # HF_HUB_OFFLINE: not even the one request
        monkeypatch.setattr("huggingface_hub.HfApi.repo_info", lambda *a, **k: pytest.fail("asked the hub"))
    with pytest.raises(ModelNotAvailable) as error:
        check_available(REPO, "v1", build_random=None)
    message = str(error.value)
    assert message.startswith(f"backbone.name_or_path={REPO}@v1 is not in the Hugging Face cache")
    assert ("HF_HUB_OFFLINE is set" if offline else "Connection refused") in message
    assert f"python -m charfeat.download backbone.name_or_path={REPO} revision=v1" in message
    assert "backbone.name_or_path=<dir>" in message
    with pytest.raises(ModelNotAvailable):
        local_snapshot(REPO, "v1")


def test_a_hub_that_never_answers_is_given_up_on(hf, monkeypatch):
    """A connection accepted but never answered (a firewall that drops replies): the probe gives up."""
    monkeypatch.setattr(hub, "PROBE_TIMEOUT", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        hf(f"http://127.0.0.1:{silent.getsockname()[1]}")
        reason = hub.hub_unreachable(REPO, None)
    assert reason is not None and ("Timeout" in reason or "no answer" in reason)


def test_hub_answers_no(tiny_path, hf):
    with FakeHub({REPO: tiny_path}) as fake:
        hf(fake.endpoint)
        with pytest.raises(ModelNotAvailable, match="no such model on the hub"):
            local_snapshot("charfeat-test/no-such-model", None)
        with pytest.raises(ModelNotAvailable, match="backbone.revision=v9: .* has no such branch"):
            local_snapshot(REPO, "v9")


def test_neither_a_directory_nor_a_hub_id(hf, closed_port, tmp_path):
    hf(f"http://127.0.0.1:{closed_port}")
    with pytest.raises(ModelNotAvailable, match="no such directory, and not a hub id"):
        local_snapshot(str(tmp_path / "models" / "gone" / "qwen"), None)


def test_an_incomplete_snapshot_is_not_used(tiny_path, hf, closed_port):
    with FakeHub({REPO: tiny_path}) as fake:
        hf(fake.endpoint)
        fetched = local_snapshot(REPO, None)
    Path(fetched, "model.safetensors").unlink()  # as an interrupted download leaves it
    hf(f"http://127.0.0.1:{closed_port}")
    with pytest.raises(ModelNotAvailable, match="is not in the Hugging Face cache"):
        local_snapshot(REPO, None)
