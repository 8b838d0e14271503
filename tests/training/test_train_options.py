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


def test_eval_every_evaluates_those_epochs_and_the_last(compose_cfg, tmp_path):
    results = train(compose_cfg(*SMALL, "trainer.epochs=5", "trainer.eval_every=2"))
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert [row["epoch"] for row in saved["results"]["history"]] == [2, 4, 5]
    assert saved["epoch"] == 5 and saved["best_epoch"] in (2, 4, 5)
    assert results["trained"]["checkpoint"]["epoch"] == saved["best_epoch"]


def test_eval_max_queries_subsets_the_epochs_not_the_final_evaluation(compose_cfg, tmp_path):
    """Per-epoch metrics of 5 of the 24 val queries, the same 5 each epoch; the final table scores all 24."""
    from charfeat.evaluation.per_query import read_per_query

    train(compose_cfg(*SMALL, "trainer.eval_max_queries=5", "trainer.epochs=3"))
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    for row in saved["results"]["history"]:
        assert row["precision_at_1"] * 5 == pytest.approx(round(row["precision_at_1"] * 5))  # a fifth at a time
    ids, _ = read_per_query(tmp_path / "run" / "per_query.npz")
    assert len(ids) == 24


def test_a_frozen_run_extracts_each_view_once_and_not_the_plain_training_images(compose_cfg, tmp_path, caplog):
    import logging

    cache = f"backbone.feature_cache={tmp_path / 'features'}"
    with caplog.at_level(logging.INFO, logger="charfeat.features"):
        train(compose_cfg(*SMALL, "augment=light", "augment.views=3", cache))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("features ")]
    assert [line.split(":")[0] for line in lines] == ["features train"] * 3 + ["features val"]
    assert all(", 0 from the cache" in line for line in lines)  # three distinct views, none the plain image
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="charfeat.features"):
        train(compose_cfg(*SMALL, "augment=light", "augment.views=3", "trainer.epochs=3", cache))
    assert all(r.getMessage().endswith(" 0 computed") for r in caplog.records if r.getMessage().startswith("features "))
