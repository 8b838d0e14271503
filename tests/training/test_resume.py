"""Checkpoints and resume: an interrupted run resumed from last.pt ends exactly like an
uninterrupted one (CPU, fixed seed), whether stopped by trainer.max_steps or by SIGTERM."""

import json
import os
import signal

import pytest
import torch

import charfeat.models.losses
from charfeat.train import train
from charfeat.training.signals import TrainingInterrupted
from configured import load_without_charfeat
from trained_run import run_module

pytestmark = pytest.mark.slow
BASE = ("logger=none", "trainer.epochs=3", "data.train_per_class=12", "data.val_per_class=6",
        "data.num_classes=4", "sampler.p=4")


def scalars(results):
    return {k: v for k, v in results["trained"].items() if isinstance(v, float)}


@pytest.fixture
def uninterrupted(compose_cfg, tmp_path):
    cfg = compose_cfg(*BASE)
    cfg.paths.output_dir = str(tmp_path / "uninterrupted")
    return train(cfg)


def test_resume_after_max_steps_is_exact(compose_cfg, tmp_path, uninterrupted):
    first = compose_cfg(*BASE, "trainer.max_steps=5")  # 3 batches an epoch: stops inside epoch 2
    train(first)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    saved = torch.load(last, weights_only=False)
    assert (saved["epoch"], saved["step_in_epoch"], saved["step"]) == (1, 2, 5)
    assert not (tmp_path / "run" / "metrics.json").exists()

    resumed = compose_cfg(*BASE, f"ckpt_path={last}")
    resumed.paths.output_dir = str(tmp_path / "resumed")
    results = train(resumed)
    assert scalars(results) == scalars(uninterrupted)  # exactly, not approximately
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["trained"]["precision_at_1"] == \
        uninterrupted["trained"]["precision_at_1"]


def test_sigterm_saves_a_checkpoint_that_resumes_exactly(compose_cfg, tmp_path, monkeypatch, uninterrupted):
    forward = charfeat.models.losses.TripletLoss.forward
    calls = {"n": 0}

    def forward_then_signal(self, embeddings, labels):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step; the step still completes
        return forward(self, embeddings, labels)

    monkeypatch.setattr(charfeat.models.losses.TripletLoss, "forward", forward_then_signal)
    with pytest.raises(TrainingInterrupted, match="resume with ckpt_path="):
        train(compose_cfg(*BASE))
    monkeypatch.setattr(charfeat.models.losses.TripletLoss, "forward", forward)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored

    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert torch.load(last, weights_only=False)["step"] == 4
    resumed = compose_cfg(*BASE, f"ckpt_path={last}")
    resumed.paths.output_dir = str(tmp_path / "resumed")
    assert scalars(train(resumed)) == scalars(uninterrupted)


def test_command_line_learning_rate_wins_on_resume(compose_cfg, tmp_path, caplog):
    train(compose_cfg(*BASE, "trainer.max_steps=4", "trainer.schedule=constant", "trainer.warmup_fraction=0"))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    overrides = [f"ckpt_path={last}", "optim.lr=0.0123", "trainer.max_steps=5", "trainer.precision=fp32"]
    resumed = compose_cfg(*BASE, *overrides)  # schedule and warmup left at their defaults this time
    resumed.paths.output_dir = str(tmp_path / "resumed")
    with caplog.at_level("INFO"):
        train(resumed, overrides=overrides)
    saved = load_without_charfeat(tmp_path / "resumed" / "checkpoints" / "last.pt")  # plain strings, no Enums
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0123)  # constant schedule kept
    assert saved["config"]["trainer"]["schedule"] == "constant" and saved["config"]["optim"]["lr"] == 0.0123
    assert saved["config"]["trainer"]["precision"] == "fp32"
    assert "the command line wins: optim.lr: 0.001 -> 0.0123" in caplog.text
    assert "the command line wins: trainer.precision: 'auto' -> 'fp32'" in caplog.text


def test_missing_resume_checkpoint_is_an_error(compose_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        train(compose_cfg(*BASE, f"ckpt_path={tmp_path}/nope.pt"))


def test_best_checkpoint_and_early_stopping(compose_cfg, tmp_path, caplog):
    with caplog.at_level("INFO"):
        results = train(compose_cfg(*BASE, "trainer.epochs=30", "trainer.patience=1", "optim.lr=0.05"))
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] < 30  # stopped early
    assert last["stale_epochs"] == 1 and best["epoch"] == last["best_epoch"] == last["epoch"] - 1
    assert best["best"] == pytest.approx(best["results"]["trained"]["mean_average_precision_at_r"])
    # "trained" is the best epoch, the model best.pt holds, not the last one (patience epochs past it)
    assert results["trained"]["mean_average_precision_at_r"] == round(best["best"], 6)  # metrics.json's rounding
    assert results["trained"]["checkpoint"] == {"path": "checkpoints/best.pt", "epoch": best["epoch"]}
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())["trained"]
    assert written["precision_at_1"] == round(best["results"]["trained"]["precision_at_1"], 6)
    assert f"trained = epoch {best['epoch']} of {last['epoch']}, the best mean_average_precision_at_r" in caplog.text


def test_each_checkpoint_is_read_once_on_resume(compose_cfg, tmp_path, monkeypatch):
    train(compose_cfg(*BASE, "trainer.max_steps=2"))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    loads = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda path, *args, **kwargs: loads.append(str(path)) or load(path, *args,
                                                                                                       **kwargs))
    overrides = [f"ckpt_path={last}"]
    resumed = compose_cfg(*BASE, *overrides)
    resumed.paths.output_dir = str(tmp_path / "resumed")
    train(resumed, overrides=overrides)
    assert loads.count(str(last)) == 1


def test_resume_carries_the_best_checkpoint_over(compose_cfg, tmp_path, caplog):
    """Interrupted in epoch 3 after its best epoch; the resumed run pauses before an epoch ends, so
    only a carried-over best.pt can be in its dir."""
    train(compose_cfg(*BASE, "trainer.max_steps=7"))  # 3 batches an epoch
    first = tmp_path / "run" / "checkpoints"
    best_epoch = torch.load(first / "last.pt", weights_only=True)["best_epoch"]
    assert best_epoch in (1, 2)
    resumed = compose_cfg(*BASE, f"ckpt_path={first / 'last.pt'}", "trainer.max_steps=8")
    resumed.paths.output_dir = str(tmp_path / "resumed")
    with caplog.at_level("INFO"):
        train(resumed)
    carried = tmp_path / "resumed" / "checkpoints" / "best.pt"
    assert carried.read_bytes() == (first / "best.pt").read_bytes()
    assert torch.load(carried, weights_only=True)["epoch"] == best_epoch
    assert f"carried over the best checkpoint (epoch {best_epoch})" in caplog.text


def test_resume_applies_an_experiment_and_a_deleted_group_and_logs_them(cache_dir, tmp_path):
    """As a user types it: a user's experiment file (a preset of global keys) and ~logger on resume."""
    (tmp_path / "presets" / "experiment").mkdir(parents=True)
    (tmp_path / "presets" / "experiment" / "wider.yaml").write_text(
        "# @package _global_\nloss:\n  margin: 0.35\ntrainer:\n  schedule: constant\n")
    small = [arg for arg in BASE if arg != "logger=none"]
    first = run_module("charfeat.train", [*small, "trainer.max_steps=4", "hydra.run.dir=first"], tmp_path, cache_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    assert list((tmp_path / "first").glob("wandb/offline-run-*"))
    resumed = run_module("charfeat.train", [*small, "ckpt_path=first/checkpoints/last.pt", "~logger",
                                            f"hydra.searchpath=[file://{tmp_path / 'presets'}]", "experiment=wider",
                                            "hydra.run.dir=second"], tmp_path, cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert "the command line wins: loss.margin: 0.2 -> 0.35" in log
    assert "the command line wins: trainer.schedule: 'cosine' -> 'constant'" in log
    assert "the command line wins: logger: {'_target_': 'charfeat.tracking.WandbTracker'" in log
    saved = torch.load(tmp_path / "second" / "checkpoints" / "last.pt", weights_only=True)["config"]
    assert saved["loss"]["margin"] == 0.35 and saved["trainer"]["schedule"] == "constant" and saved["logger"] is None
    assert not list((tmp_path / "second").glob("wandb"))


@pytest.mark.parametrize("augmented", [("augment=light", "augment.views=2"),
                                       ("augment=light", "backbone.train=lora", "data.num_workers=1")],
                         ids=["frozen-views", "lora-workers"])
def test_an_augmented_run_resumes_exactly(compose_cfg, tmp_path, augmented):
    whole = compose_cfg(*BASE, *augmented)
    whole.paths.output_dir = str(tmp_path / "whole")
    expected = train(whole)
    train(compose_cfg(*BASE, *augmented, "trainer.max_steps=5"))
    resumed = compose_cfg(*BASE, *augmented, f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.pt'}")
    resumed.paths.output_dir = str(tmp_path / "resumed")
    assert scalars(train(resumed)) == scalars(expected)
    plain = compose_cfg(*BASE, *augmented[1:])  # the same run without augmentation trains another model
    plain.paths.output_dir = str(tmp_path / "plain")
    assert scalars(train(plain)) != scalars(expected)
