"""The generated sample set deletes nothing it did not make: it lives under the cache dir, one
directory per setting, is written to a temp dir and renamed, and refuses a user's data.root."""

import pytest
from hydra.utils import instantiate

from charfeat.config import SampleDataConfig, build
from charfeat.errors import ConfigError

TINY = dict(num_classes=2, train_per_class=2, val_per_class=1, image_size=16)


def test_data_root_with_the_sample_set_is_an_error_and_the_folder_is_untouched(compose_cfg, tmp_path):
    """`python -m charfeat.train data.root=/path/to/my_dataset` (data=local forgotten)."""
    mine = tmp_path / "my_dataset"
    (mine / "images").mkdir(parents=True)
    (mine / "images" / "holiday.jpg").write_bytes(b"my photo")
    (mine / "notes.txt").write_text("mine")
    cfg = compose_cfg(f"data.root={mine}", *(f"data.{k}={v}" for k, v in TINY.items()))
    with pytest.raises(Exception) as err:  # Hydra's InstantiationException, caused by ours
        instantiate(cfg.data).records("train")
    assert isinstance(err.value.__cause__, ConfigError)
    assert f"use data=local data.root={mine}" in str(err.value.__cause__)
    assert (mine / "images" / "holiday.jpg").read_bytes() == b"my photo" and (mine / "notes.txt").is_file()


def test_each_setting_has_its_own_set_and_neither_destroys_the_other(tmp_path):
    first = build(SampleDataConfig, cache_dir=str(tmp_path), **TINY)
    assert len(first.records("train")) == 4
    image = next((first.root / "images").iterdir())
    before = image.read_bytes()
    second = build(SampleDataConfig, cache_dir=str(tmp_path), **{**TINY, "num_classes": 3})
    assert len(second.records("train")) == 6
    assert second.root != first.root and first.root.parent == second.root.parent == tmp_path
    assert image.read_bytes() == before and (first.root / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.root.name, second.root.name])  # no temp dirs


def test_a_foreign_directory_at_the_sets_path_is_refused_not_removed(tmp_path):
    data = build(SampleDataConfig, cache_dir=str(tmp_path), **TINY)
    data.root.mkdir(parents=True)
    (data.root / "keep.txt").write_text("not charfeat's")
    with pytest.raises(ConfigError, match="not a finished sample set"):
        data.records("train")
    assert (data.root / "keep.txt").read_text() == "not charfeat's"
