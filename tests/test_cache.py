"""The caches hold people's photos and what was computed from them: written private to the user,
and `python -m charfeat.cache` lists, prunes (by last use) and clears them, touching nothing else."""

import os
import stat
import time

import pytest
import torch

from charfeat.cache import main as cache_main
from charfeat.data.sources.s3_object_cache import S3ObjectCache
from charfeat.features.cache import FeatureCache


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0o022)  # the usual default: files 0644, directories 0755
    yield
    os.umask(old)


def fill(root):
    """An S3 entry and a feature shard under ``root``, as runs write them."""
    S3ObjectCache(root / "s3").put("bucket", "people/jane.jpg", "etag1", b"a photo")
    features = FeatureCache(root / "features", {"model": "m"}, dim=2)
    features.put([b"k" * 32], torch.ones(1, 2))
    features.flush()
    return root / "s3", features


def test_caches_are_private_to_the_user(tmp_path, open_umask):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    fill(home / "cache")
    files = [p for p in (home / "cache").rglob("*") if p.is_file()]
    dirs = [p for p in (home / "cache").rglob("*") if p.is_dir()] + [home / "cache"]
    assert len(files) == 3 and all(mode(p) == 0o600 for p in files), {str(p): oct(mode(p)) for p in files}
    assert all(mode(p) == 0o700 for p in dirs), {str(p): oct(mode(p)) for p in dirs}
    assert mode(home) == 0o755  # a directory charfeat did not create keeps its mode


def test_cache_command_lists_prunes_by_last_use_and_clears(tmp_path, capsys):
    root = tmp_path / "cache"
    s3_root, features = fill(root)
    old = time.time() - 40 * 86400
    [entry] = [p for p in s3_root.rglob("*") if p.is_file()]
    os.utime(entry, (old, old))
    foreign = root / "s3" / "ab" / "my-notes.txt"
    foreign.parent.mkdir(parents=True, exist_ok=True)
    foreign.write_text("not charfeat's")

    cache_main(["--cache-dir", str(root), "list"])
    listed = capsys.readouterr().out
    assert [line.split()[:2] for line in listed.splitlines()[2:]] == [["s3", "1"], ["features", "1"],
                                                                     ["fingerprints", "0"], ["sample_data", "0"]]

    assert S3ObjectCache(s3_root).get("bucket", "people/jane.jpg", "etag1") == b"a photo"  # a use refreshes it
    cache_main(["--cache-dir", str(root), "prune", "--older-than", "30d"])
    assert entry.exists() and "removed 0 entries" in capsys.readouterr().err
    os.utime(entry, (old, old))
    cache_main(["--cache-dir", str(root), "prune", "--older-than", "30d"])
    assert not entry.exists() and features.shards() and "removed 1 entry" in capsys.readouterr().err

    cache_main(["--cache-dir", str(root), "clear", "features"])
    assert not features.shards() and not features.dir.exists()
    assert foreign.read_text() == "not charfeat's"  # only what charfeat writes is ever removed
