"""Checkpoint files: loading one never runs code (neither its pickle nor its config's _target_s), a full
disk is reported by path and keeps the previous checkpoint, and everything saved is plain data."""

import os
import re

import numpy as np
import pytest
import torch

from charfeat.errors import UserError
from charfeat.inference import load_model
from charfeat.training.checkpoint import CheckpointError, plain, read_checkpoint, save_checkpoint
from trained_run import run_module


class Payload:
    """What an attacker pickles: unpickling it calls ``os.system``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted(path, marker):
    """A file with the keys of a charfeat checkpoint whose head, once unpickled, creates ``marker``."""
    torch.save({"head": Payload(marker), "backbone_trainable": {}, "label_map": {}, "config": {}}, path)
    return path


def test_crafted_pickle_is_refused_and_nothing_it_carries_runs(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(CheckpointError, match=r"was refused: .*could run code \(.*posix\.system"):
        load_model(crafted(tmp_path / "evil.pt", marker))
    assert not marker.exists()
    assert issubclass(CheckpointError, UserError)


@pytest.mark.slow
def test_evaluate_refuses_a_crafted_checkpoint(cache_dir, tmp_path):
    marker = tmp_path / "ran"
    evil = crafted(tmp_path / "last.pt", marker)
    result = run_module("charfeat.evaluate", [f"checkpoint={evil}", "hydra.run.dir=ev"], tmp_path, cache_dir)
    assert result.returncode != 0
    assert f"checkpoint {evil} was refused" in result.stderr
    assert not marker.exists()


def config_building(target: str, args: list) -> dict:
    """A checkpoint made of plain data only, whose config builds ``target(*args)`` as the backbone's
    ``name_or_path`` (Hydra instantiates nested configs first)."""
    backbone = {"_target_": "charfeat.models.backbone.model.Qwen3VLBackbone",
                "name_or_path": {"_target_": target, "_args_": args}}
    return {"head": {}, "backbone_trainable": {}, "label_map": {"a": 0},
            "config": {"backbone": backbone, "head": {"_target_": "charfeat.models.head.ProjectionHead"}}}


@pytest.mark.parametrize(("target", "args"), [
    ("builtins.open", ["{created}", "w"]),
    ("io.open", ["{created}", "w"]),
    ("charfeat.features.cache.os.system", ["touch {created}"]),  # a function reached through a charfeat module
    ("charfeat.inference.Path", ["{created}"]),  # a class imported into a charfeat module, defined elsewhere
])
def test_a_config_target_outside_the_allow_list_is_refused_by_name(tmp_path, target, args):
    created = tmp_path / "created"
    args = [arg.format(created=created) for arg in args]
    torch.save(config_building(target, args), tmp_path / "plain.pt")
    torch.load(tmp_path / "plain.pt", weights_only=True)  # passes the unpickler: only its config is wrong
    with pytest.raises(CheckpointError, match=re.escape(f"backbone.name_or_path._target_='{target}' is not allowed")):
        load_model(tmp_path / "plain.pt")
    assert not created.exists()


def test_plain_turns_numpy_into_tensors_and_refuses_other_objects():
    state = np.random.RandomState(0).get_state()
    converted = plain({"rng": state, "order": [np.int64(3)], "x": np.float32(0.5)})
    assert isinstance(converted["rng"][1], torch.Tensor) and converted["order"] == [3]
    assert type(converted["order"][0]) is int and type(converted["x"]) is float
    restored = np.random.RandomState(1)
    restored.set_state(converted["rng"])
    assert restored.rand() == np.random.RandomState(0).rand()
    with pytest.raises(TypeError, match=r"checkpoint\['bad'\] is a object"):
        plain({"bad": object()})


def test_saved_checkpoint_reads_back_with_weights_only(tmp_path):
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(path, head={"w": torch.ones(2)}, backbone_trainable={}, label_map={"a": 0},
                    config={"head": {"_target_": "charfeat.models.head.ProjectionHead"}},
                    rng=[{"numpy": np.random.get_state()}])
    assert torch.load(path, weights_only=True)["head"]["w"].tolist() == [1.0, 1.0]
    assert read_checkpoint(path)["label_map"] == {"a": 0}
    assert not list(path.parent.glob("*.tmp"))


def test_full_disk_names_the_path_removes_the_temp_file_and_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, head={"w": torch.zeros(3)}, step=1)
    previous = path.read_bytes()
    tmp = path.with_name("last.pt.tmp")
    tmp.symlink_to("/dev/full")  # every write there fails with ENOSPC, as on a full disk
    with pytest.raises(UserError, match=f"no space left writing {path}"):
        save_checkpoint(path, head={"w": torch.ones(1000, 100)}, step=2)
    assert not os.path.lexists(tmp)
    assert path.read_bytes() == previous and torch.load(path, weights_only=True)["step"] == 1


def test_a_file_that_is_no_checkpoint_is_named(tmp_path):
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(KeyError, match="not a charfeat checkpoint"):
        read_checkpoint(tmp_path / "list.pt")
