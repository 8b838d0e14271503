"""Projection head shapes and normalisation; triplet loss values checked by hand."""

import pytest
import torch
from torch.nn import functional as F

from charfeat.head import ProjectionHead
from charfeat.losses import TripletLoss


@pytest.mark.parametrize("hidden_dim", [None, 32])
def test_head_outputs_unit_vectors(hidden_dim):
    head = ProjectionHead(in_dim=16, out_dim=8, hidden_dim=hidden_dim).eval()
    out = head(torch.randn(5, 16) * 100 + 3)
    assert out.shape == (5, 8)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))


@pytest.mark.parametrize("kwargs", [dict(in_dim=0), dict(in_dim=4, out_dim=0), dict(in_dim=4, dropout=1.0)])
def test_head_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ProjectionHead(**kwargs)


def test_triplet_loss_is_zero_when_classes_are_far_apart():
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    loss, mined = TripletLoss(margin=0.2, miner="all")(embeddings, torch.tensor([0, 0, 1, 1]))
    assert loss.item() == pytest.approx(0.0) and mined == 0


def test_triplet_loss_matches_hand_computation():
    """All four anchors see positive similarity 1 and negative similarity 1: loss = margin."""
    embeddings = F.normalize(torch.ones(4, 3), dim=-1).requires_grad_()
    loss, mined = TripletLoss(margin=0.3, miner="all")(embeddings, torch.tensor([0, 0, 1, 1]))
    assert mined == 8  # 4 anchors x 1 positive x 2 negatives
    assert loss.item() == pytest.approx(0.3, abs=1e-6)
    loss.backward()
    assert embeddings.grad is None or torch.isfinite(embeddings.grad).all()


@pytest.mark.parametrize("kwargs", [dict(margin=0), dict(miner="medium"), dict(distance="manhattan")])
def test_triplet_loss_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        TripletLoss(**kwargs)
