"""Every numeric range and rule across keys is checked before anything is built (no data read, no model
loaded), naming the key and what it allows; optimized_metric follows trainer.monitor."""

import pytest
import torch

import charfeat.train
from charfeat.errors import ConfigError
from charfeat.train import train
from trained_run import run_module

BAD = [
    ("trainer.grad_clip=-1", "trainer.grad_clip=-1.0: must be > 0 or null"),  # gradient ascent
    ("trainer.grad_clip=0", "trainer.grad_clip=0.0: must be > 0 or null"),  # zeroes every gradient
    ("trainer.warmup_fraction=2", "trainer.warmup_fraction=2.0: must be in [0, 1]"),
    ("trainer.patience=-1", "trainer.patience=-1: must be >= 1 or null"),
    ("trainer.eval_every=0", "trainer.eval_every=0: must be >= 1"),
    ("trainer.eval_max_queries=0", "trainer.eval_max_queries=0: must be >= 1 or null"),
    ("trainer.max_steps=0", "trainer.max_steps=0: must be >= 1 or null"),
    ("trainer.epochs=0", "trainer.epochs=0: must be >= 1"),
    ("trainer.accumulate=0", "trainer.accumulate=0: must be >= 1"),
    ("trainer.embed_batch_size=0", "trainer.embed_batch_size=0: must be >= 1"),
    ("head.out_dim=0", "head.out_dim=0: must be >= 1"),
    ("head.dropout=1.5", "head.dropout=1.5: must be in [0, 1)"),
    ("optim.lr=-1", "optim.lr=-1.0: must be > 0"),
    ("backbone.layer=99", "backbone.layer=99: must be in [-3, 2]"),  # the tiny model has 2 layers
    ("backbone.min_pixels=100000 backbone.max_pixels=1000", "backbone.min_pixels=100000 exceeds backbone.max_pixels=1000"),
    ("backbone.max_pixels=1000", "backbone.min_pixels=4096 exceeds backbone.max_pixels=1000 (null: the processor's)"),
    ("trainer.device=gpu", "trainer.device=gpu: expected auto, cpu, cuda or cuda:N"),
    ("backbone.dtype=float16 backbone.train=full", "float16 training needs loss scaling"),
    ("backbone.embed_dim=129", "backbone.embed_dim=129: must be in [1, 128], 128 being the hidden size of"),  # tiny
    ("backbone.embed_dim=0", "backbone.embed_dim=0: must be in [1, 128]"),
    ("backbone.format=embedding backbone.instruction=''", "backbone.instruction is empty"),
    ("loss=arcface loss.lr=0", "loss.lr=0.0: must be > 0"),
]


@pytest.fixture
def nothing_built(monkeypatch, compose_cfg):
    """Building anything (data, sampler, backbone, ...) fails the test; the tiny model's files are there
    (config.json is what the layer check reads)."""
    from charfeat.models.backbone.tiny import build_tiny_qwen3_vl

    build_tiny_qwen3_vl(compose_cfg().backbone.name_or_path)

    def refuse(*args, **kwargs):
        raise AssertionError("something was built before the config was validated")

    monkeypatch.setattr("hydra.utils.instantiate", refuse)  # build_trainer imports it when called


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[o for o, _ in BAD])
def test_a_bad_value_fails_before_anything_is_built(compose_cfg, nothing_built, overrides, message):
    with pytest.raises(ConfigError) as info:
        train(compose_cfg("logger=none", *overrides.split()))
    assert message in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_an_error_not_an_assertion(compose_cfg, nothing_built):
    with pytest.raises(ConfigError, match=r"trainer.device=cuda but torch .* sees no CUDA device; use "
                                          r"trainer.device=auto or cpu"):
        train(compose_cfg("trainer.device=cuda"))


def test_every_problem_is_listed_at_once(compose_cfg, nothing_built):
    with pytest.raises(ConfigError) as info:
        train(compose_cfg("trainer.grad_clip=-1", "optim.lr=0", "head.dropout=1"))
    assert [line.strip().split(":")[0] for line in str(info.value).splitlines()[1:]] == \
        ["trainer.grad_clip=-1.0", "head.dropout=1.0", "optim.lr=0.0"]


@pytest.mark.parametrize("extra", [[], ["hparams_search=optuna"]])
def test_optimized_metric_follows_the_monitor(compose_cfg, extra):
    assert compose_cfg(*extra).optimized_metric == "mean_average_precision_at_r"
    assert compose_cfg(*extra, "trainer.monitor=precision_at_1").optimized_metric == "precision_at_1"
    assert compose_cfg(*extra, "trainer.monitor=precision_at_1", "optimized_metric=r_precision").optimized_metric \
        == "r_precision"


@pytest.mark.slow
def test_the_command_line_reports_a_bad_value_before_loading_anything(cache_dir, tmp_path):
    result = run_module("charfeat.train", ["trainer.grad_clip=-1", "logger=none", "hydra.run.dir=out"], tmp_path,
                        cache_dir)
    assert result.returncode != 0
    assert "trainer.grad_clip=-1.0: must be > 0 or null" in result.stderr
    assert "data:" not in result.stdout + result.stderr and "backbone:" not in result.stdout + result.stderr
