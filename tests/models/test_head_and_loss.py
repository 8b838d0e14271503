"""Projection head shapes and normalisation; triplet loss values checked by hand."""

import pytest
import torch
from torch.nn import functional as F

from charfeat.config import ArcFaceConfig, HeadConfig, TripletLossConfig, build


@pytest.mark.parametrize("hidden_dim", [None, 32])
def test_head_outputs_unit_vectors(hidden_dim):
    head = build(HeadConfig, out_dim=8, hidden_dim=hidden_dim)(in_dim=16).eval()
    out = head(torch.randn(5, 16) * 100 + 3)
    assert out.shape == (5, 8)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))


@pytest.mark.parametrize(("in_dim", "values"), [(0, {}), (4, dict(out_dim=0)), (4, dict(dropout=1.0))])
def test_head_rejects_bad_arguments(in_dim, values):
    with pytest.raises(ValueError):
        build(HeadConfig, **values)(in_dim=in_dim)


def test_triplet_loss_is_zero_when_classes_are_far_apart():
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    loss, mined = build(TripletLossConfig, margin=0.2, miner="all")(embeddings, torch.tensor([0, 0, 1, 1]))
    assert loss.item() == pytest.approx(0.0) and mined == 0


def test_triplet_loss_matches_hand_computation():
    """All four anchors see positive similarity 1 and negative similarity 1: loss = margin."""
    embeddings = F.normalize(torch.ones(4, 3), dim=-1).requires_grad_()
    loss, mined = build(TripletLossConfig, margin=0.3, miner="all")(embeddings, torch.tensor([0, 0, 1, 1]))
    assert mined == 8  # 4 anchors x 1 positive x 2 negatives
    assert loss.item() == pytest.approx(0.3, abs=1e-6)
    loss.backward()
    assert embeddings.grad is None or torch.isfinite(embeddings.grad).all()


@pytest.mark.parametrize(("values", "key"), [(dict(margin=0), "loss.margin"), (dict(miner="medium"), "miner"),
                                           (dict(distance="manhattan"), "distance")])
def test_triplet_loss_rejects_bad_arguments(values, key):
    with pytest.raises(ValueError, match=key):
        build(TripletLossConfig, **values)


@pytest.mark.parametrize("miner", ["semihard", "hard", "batch_hard"])
def test_every_triplet_miner_trains(miner):
    generator = torch.Generator().manual_seed(0)
    embeddings = F.normalize(torch.randn(16, 8, generator=generator), dim=-1).requires_grad_()
    labels = torch.arange(4).repeat_interleave(4)
    loss, mined = build(TripletLossConfig, margin=0.5, miner=miner)(embeddings, labels)
    assert mined > 0 and loss.item() > 0
    loss.backward()
    assert embeddings.grad.abs().sum() > 0


def test_mined_loss_passes_the_miners_pairs():
    from pytorch_metric_learning import losses, miners

    from charfeat.models.losses import MinedLoss

    generator = torch.Generator().manual_seed(0)
    embeddings = F.normalize(torch.randn(16, 8, generator=generator), dim=-1)
    labels = torch.arange(4).repeat_interleave(4)
    miner = miners.MultiSimilarityMiner(epsilon=0.1)
    a1, p, a2, n = miner(embeddings, labels)
    loss, mined = MinedLoss(losses.MultiSimilarityLoss(), miner)(embeddings, labels)
    assert mined == len(a1) + len(a2) > 0
    assert loss.item() == pytest.approx(losses.MultiSimilarityLoss()(embeddings, labels, (a1, p, a2, n)).item())
    loss, mined = MinedLoss(losses.SupConLoss(), miner=None)(embeddings, labels)
    assert mined == 16 and loss.item() > 0


def test_arcface_holds_class_centres_with_their_own_lr():
    loss_fn = build(ArcFaceConfig, lr=0.05)(num_classes=5, embedding_dim=8)
    assert [p.shape for p in loss_fn.parameters()] == [torch.Size([8, 5])]
    loss, _ = loss_fn(F.normalize(torch.randn(10, 8), dim=-1), torch.arange(5).repeat(2))
    loss.backward()
    assert next(loss_fn.parameters()).grad is not None and loss_fn.lr == 0.05


def test_easy_triplets_already_meet_the_margin():
    generator = torch.Generator().manual_seed(0)
    embeddings = F.normalize(torch.randn(16, 8, generator=generator), dim=-1)
    loss, mined = build(TripletLossConfig, margin=0.1, miner="easy")(embeddings, torch.arange(4).repeat_interleave(4))
    assert mined > 0 and loss.item() == pytest.approx(0.0)
