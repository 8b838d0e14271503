"""Training options end to end, in process on a small sample set: each loss, accumulation, bf16."""

import pytest
import torch

from charfeat.train import train

pytestmark = pytest.mark.slow
SMALL = ("logger=none", "trainer.epochs=2", "trainer.plots=false", "data.train_per_class=12",
         "data.val_per_class=6", "data.num_classes=4", "sampler.p=4")


@pytest.mark.parametrize("loss", ["multi_similarity", "supcon", "infonce", "arcface"])
def test_each_loss_trains(compose_cfg, tmp_path, loss):
    results = train(compose_cfg(*SMALL, f"loss={loss}"))
    assert 0.0 <= results["trained"]["mean_average_precision_at_r"] <= 1.0
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    groups = saved["optimizer"]["param_groups"]
    if loss == "arcface":  # class centres in their own group, at the loss's learning rate
        assert len(groups) == 2 and groups[1]["initial_lr"] == pytest.approx(1e-2)
        assert saved["loss"]["loss.W"].shape == (128, 4)
    else:
        assert len(groups) == 1


@pytest.mark.parametrize(("accumulate", "optimizer_steps"), [(3, 2), (2, 4)])
def test_accumulation_takes_one_optimizer_step_per_k_batches(compose_cfg, tmp_path, accumulate, optimizer_steps):
    """3 batches an epoch, 2 epochs: groups of 3 -> 2 steps; groups of 2 (the last one short) -> 4 steps."""
    train(compose_cfg(*SMALL, f"trainer.accumulate={accumulate}", "trainer.schedule=cosine"))
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert saved["step"] == 6 and saved["scheduler"]["last_epoch"] == optimizer_steps
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine ran exactly to 0


def test_bf16_autocast_runs_on_cpu_when_asked(compose_cfg):
    results = train(compose_cfg(*SMALL, "trainer.precision=bf16", "trainer.epochs=1"))
    assert 0.0 <= results["trained"]["precision_at_1"] <= 1.0
