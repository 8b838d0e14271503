"""A resumed run's config: the checkpoint's, with each command-line override applied to the keys it sets
(parsed by Hydra): keys, groups, deletions of groups and presets of global keys; what cannot be
applied is an error naming it; every change is logged."""

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from charfeat.config import register_configs
from charfeat.errors import ConfigError
from charfeat.training.resume import resumed_config


def composed(*overrides: str):
    register_configs()
    cfg = compose("train", overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/charfeat-resume-test"
        cfg.paths.cache_dir = "/tmp/charfeat-resume-cache"
    return cfg


@pytest.fixture
def resume():
    """resume(saved_overrides, overrides) -> the resumed config, composed and merged as train() does."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="charfeat.conf", version_base="1.3"):
        def _resume(saved_overrides: list[str], overrides: list[str]):
            saved = OmegaConf.to_container(composed(*saved_overrides), resolve=True, enum_to_str=True)
            return resumed_config(composed(*overrides), overrides, saved, "run/checkpoints/last.pt")
        yield _resume
    GlobalHydra.instance().clear()


def test_a_key_override_wins_and_the_rest_is_kept(resume, caplog):
    with caplog.at_level("INFO"):
        cfg = resume(["trainer.patience=3", "loss.margin=0.4"], ["optim.lr=0.5"])
    assert cfg.optim.lr == 0.5 and cfg.trainer.patience == 3 and cfg.loss.margin == 0.4
    assert "the command line wins: optim.lr: 0.001 -> 0.5" in caplog.text


def test_an_experiment_preset_sets_every_key_it_names(resume, caplog):
    with caplog.at_level("INFO"):
        cfg = resume(["trainer.patience=3", "loss.margin=0.4"], ["experiment=seed_baseline"])
    assert cfg.data._target_ == "charfeat.data.sources.s3.S3Data" and cfg.data.bucket == "sometimes-ki-datasets"
    assert cfg.backbone.name_or_path == "Qwen/Qwen3-VL-2B-Instruct" and cfg.optim.lr == 1e-5
    assert cfg.loss.margin == 0.2  # the preset's, though it equals the default
    assert cfg.trainer.patience == 3  # not in the preset: the checkpoint's
    assert "the command line wins: loss.margin: 0.4 -> 0.2" in caplog.text
    assert "the command line wins: data.bucket: None -> 'sometimes-ki-datasets'" in caplog.text


def test_a_group_override_replaces_the_whole_node(resume):
    cfg = resume(["head.dropout=0.3", "head.hidden_dim=64"], ["head=linear"])
    assert cfg.head.hidden_dim is None and cfg.head.dropout == 0.0


def test_deleting_a_group_removes_it(resume, caplog):
    with caplog.at_level("INFO"):
        cfg = resume([], ["~logger"])
    assert cfg.logger is None
    assert "the command line wins: logger: {'_target_': 'charfeat.tracking.WandbTracker'" in caplog.text


def test_an_override_the_checkpoint_already_has_is_logged_as_such(resume, caplog):
    with caplog.at_level("INFO"):
        resume(["loss.margin=0.4"], ["loss.margin=0.4", "hydra.run.dir=elsewhere"])
    assert "resume: the checkpoint's config already has loss.margin=0.4\n" in caplog.text


def test_a_users_preset_that_includes_another_config_sets_its_node(resume, tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "nested.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /head/linear@head\n  - _self_\nloss:\n  margin: 0.3\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    cfg = resume([searchpath, "head.dropout=0.3", "loss.margin=0.1"], [searchpath, "experiment=nested"])
    assert cfg.head.hidden_dim is None and cfg.head.dropout == 0.0 and cfg.loss.margin == 0.3


def test_an_override_that_cannot_be_applied_is_refused_by_name(resume):
    """A group moved to the top level composes only where its keys happen to fit; on resume it is refused
    (called with the config composed without it, which is all resumed_config reads besides the overrides)."""
    saved = OmegaConf.to_container(composed(), resolve=True, enum_to_str=True)
    with pytest.raises(ConfigError, match=r"ckpt_path=last.pt: the override 'head@_global_=linear' cannot be "
                                          r"applied on resume: it puts head at the top level of the config"):
        resumed_config(composed(), ["head@_global_=linear"], saved, "last.pt")


def test_a_key_added_to_a_schema_since_the_checkpoint_takes_this_runs_value(caplog):
    """A checkpoint written before trainer.eval_every existed resumes with the default (or the command
    line's value); a group option the checkpoint did not choose adds none of its keys."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="charfeat.conf", version_base="1.3"):
        saved = OmegaConf.to_container(composed("head=linear"), resolve=True, enum_to_str=True)
        del saved["trainer"]["eval_every"], saved["trainer"]["eval_max_queries"]
        with caplog.at_level("INFO"):
            cfg = resumed_config(composed("trainer.eval_max_queries=50"), ["trainer.eval_max_queries=50"], saved,
                                 "run/checkpoints/last.pt")
    GlobalHydra.instance().clear()
    assert cfg.trainer.eval_every == 1 and cfg.trainer.eval_max_queries == 50
    assert "resume: trainer.eval_every is not in the checkpoint's config (a key added since): 1" in caplog.text
    assert set(cfg.head) == set(saved["head"])  # the linear head of the checkpoint: no key of the default mlp's
