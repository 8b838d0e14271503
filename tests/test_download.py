"""`python -m charfeat.download`: a backbone fetched ahead from the hub (a local stand-in, no network),
into the Hugging Face cache or a directory, so that runs on offline machines load it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from huggingface_hub import constants

from charfeat.config import register_configs
from charfeat.models.backbone.hub import ModelNotAvailable, cached_snapshot
from charfeat.testing.hub import COMMIT, FakeHub

REPO = "charfeat-test/tiny-qwen3-vl"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from charfeat.models.backbone.tiny import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(tmp_path_factory.mktemp("models") / "tiny-qwen3-vl")


def download_cfg(*overrides: str):
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="charfeat.conf", version_base="1.3"):
            return compose("download", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def run_download(args: list[str], endpoint: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf-home")}
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run([sys.executable, "-m", "charfeat.download", *args, "hydra.run.dir=dl"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


def test_download_fills_the_cache_that_offline_runs_read(tiny_model, tmp_path, monkeypatch):
    from charfeat.download import download

    cache = tmp_path / "hf-cache"
    with FakeHub({REPO: tiny_model}) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        folder = download(download_cfg(f"backbone.name_or_path={REPO}", "revision=main"))
    assert folder == cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in tiny_model.iterdir())
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert cached_snapshot(REPO, None) == str(folder)  # what an offline run resolves, no request made
    with pytest.raises(ModelNotAvailable, match="the hub cannot be reached"):
        download(download_cfg(f"backbone.name_or_path={REPO}"))  # offline: nothing to fetch from


@pytest.mark.slow
def test_download_command_into_a_directory_prints_the_offline_run(tiny_model, tmp_path):
    with FakeHub({REPO: tiny_model}) as hub:
        result = run_download(["backbone=qwen3_vl_2b", f"backbone.name_or_path={REPO}", "target_dir=models/q"],
                              hub.endpoint, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    target = tmp_path / "models" / "q"
    assert (target / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()
    assert f"python -m charfeat.train backbone=qwen3_vl_2b backbone.name_or_path={target}" in result.stdout
    assert "Fetching" in result.stderr  # huggingface_hub's progress bar, on for a download
    assert (tmp_path / "dl" / "download.log").is_file()


@pytest.mark.slow
def test_download_command_errors_are_one_line(tiny_model, tmp_path):
    with FakeHub({REPO: tiny_model}) as hub:
        wrong_revision = run_download([f"backbone.name_or_path={REPO}", "revision=v9"], hub.endpoint, tmp_path)
    unreachable = run_download([], "http://127.0.0.1:9", tmp_path)  # nothing listens on the discard port
    local = run_download(["backbone=tiny"], "http://127.0.0.1:9", tmp_path)
    for result, message in [(wrong_revision, "backbone.revision=v9: charfeat-test/tiny-qwen3-vl has no such"),
                            (unreachable, "error: cannot fetch Qwen/Qwen3-VL-2B-Instruct: the hub cannot be reached"),
                            (local, "is a local directory (or built locally): nothing to download")]:
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
