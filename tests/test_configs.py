"""Every option of every config group composes, validates against its schema and instantiates."""

import functools
import inspect
from importlib.resources import files

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from charfeat.config import SCHEMAS

CONF = files("charfeat.conf")
GROUPS = ["data", "sampler", "backbone", "head", "loss", "optim", "trainer", "logger", "paths"]
OPTIONS = [(group, entry.name.removesuffix(".yaml")) for group in GROUPS
           for entry in sorted(CONF.joinpath(group).iterdir(), key=lambda e: e.name) if entry.name.endswith(".yaml")]
EXPERIMENTS = sorted(e.name.removesuffix(".yaml") for e in CONF.joinpath("experiment").iterdir()
                     if e.name.endswith(".yaml"))
def schema_of(group: str, option: str):
    """The schema a group option's YAML names first in its defaults list."""
    import yaml

    first = yaml.safe_load(CONF.joinpath(group, f"{option}.yaml").read_text())["defaults"][0]
    schema_group, _, name = first.removeprefix("/").removesuffix("@_here_").rpartition("/")
    return SCHEMAS[(schema_group, name)]


def test_every_group_has_options():
    assert {group for group, _ in OPTIONS} == set(GROUPS)
    assert "seed_baseline" in EXPERIMENTS


def instantiate_all(cfg):
    """Build everything but the backbone; the backbone's arguments must fit its constructor."""
    assert hasattr(instantiate(cfg.data), "records")
    batches = instantiate(cfg.sampler)(labels=[i % cfg.sampler.p for i in range(8 * cfg.sampler.p)])
    assert all(len(batch) == cfg.sampler.p * cfg.sampler.k for batch in batches)
    backbone_kwargs = {k: v for k, v in OmegaConf.to_container(cfg.backbone, resolve=True).items()
                       if not k.startswith("_")}
    inspect.signature(get_class(cfg.backbone._target_)).bind(**backbone_kwargs)
    head = instantiate(cfg.head)(in_dim=16)
    out = head.eval()(torch.randn(4, 16))
    assert out.shape == (4, cfg.head.out_dim)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))
    loss_fn = instantiate(cfg.loss)
    if isinstance(loss_fn, functools.partial):  # sized by the run, as train.py does
        loss_fn = loss_fn(num_classes=4, embedding_dim=4)
    loss, _ = loss_fn(torch.nn.functional.normalize(torch.randn(8, 4), dim=-1), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    assert torch.isfinite(loss)
    assert isinstance(instantiate(cfg.optim)(params=head.parameters()), torch.optim.Optimizer)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(compose_cfg, group, option):
    overrides = [f"{group}={option}"]
    if (group, option) in (("data", "local"), ("data", "folder")):
        overrides.append("data.root=/nonexistent")
    if (group, option) in (("data", "s3"), ("data", "s3_prefix")):
        overrides.append("data.bucket=some-bucket")
    cfg = compose_cfg(*overrides)
    node = cfg[group]
    if node is not None:
        assert OmegaConf.get_type(node) is schema_of(group, option)
    OmegaConf.resolve(cfg)
    instantiate_all(cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(compose_cfg, experiment):
    cfg = compose_cfg(f"experiment={experiment}")
    OmegaConf.resolve(cfg)
    instantiate_all(cfg)


def test_seed_baseline_is_the_documented_run(compose_cfg):
    cfg = compose_cfg("experiment=seed_baseline")
    assert cfg.data.bucket == "sometimes-ki-datasets"
    assert cfg.data.prefix == "characters/augmented/generated/"
    assert cfg.backbone.name_or_path == "Qwen/Qwen3-VL-2B-Instruct" and cfg.backbone.train == "frozen"
    assert cfg.head.hidden_dim is not None  # MLP head
    assert (cfg.loss.margin, cfg.loss.miner) == (0.2, "semihard")
    assert (cfg.sampler.p, cfg.sampler.k) == (8, 4)
    assert cfg.optim.lr == pytest.approx(1e-5)
    assert cfg.trainer.epochs == 10


def test_used_by_overrides(compose_cfg):
    cfg = compose_cfg("sampler.p=8", "loss.margin=0.3")
    assert cfg.sampler.p == 8 and cfg.loss.margin == pytest.approx(0.3)
    assert cfg.data._target_.endswith("SampleData") and cfg.backbone.build_tiny
    assert cfg.logger.mode == "offline"


def test_logger_none_disables_tracking(compose_cfg):
    assert compose_cfg("logger=none").logger is None


@pytest.mark.parametrize(("override", "message"), [
    ("loss.margn=0.3", "loss.margn"),
    ("sampler.q=3", "sampler.q"),
    ("loss.margin=abc", "loss.margin"),
    ("sampler.p=many", "sampler.p"),
])
def test_bad_override_fails_naming_the_key(compose_cfg, override, message):
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(override)
    text = str(info.value) + str(info.value.__cause__)
    assert message in text


def test_misspelt_key_in_a_yaml_file_is_rejected(compose_cfg, tmp_path):
    """A user's experiment file (found through hydra.searchpath) with a typo fails, naming the key."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "typo.yaml").write_text("# @package _global_\nloss:\n  margn: 0.5\n")
    (tmp_path / "experiment" / "fine.yaml").write_text("# @package _global_\nloss:\n  margin: 0.5\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    assert compose_cfg(searchpath, "experiment=fine").loss.margin == 0.5
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(searchpath, "experiment=typo")
    assert "margn" in str(info.value) + str(info.value.__cause__)
