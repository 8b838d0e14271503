"""Loss wiring: pytorch-metric-learning losses, fed by its miners where the loss uses them.

Every loss here maps (embeddings [B, D], labels [B]) to (scalar loss, number of mined tuples);
zero mined tuples means the batch taught nothing, which a run should be able to see. Losses
that hold weights (ArcFace's class centres) expose them as parameters, trained in their own
optimizer group at their own learning rate (``lr``).
"""

import torch
from torch import nn

from charfeat.config import Distance, Miner


def _count(tuples) -> int:
    """Mined triplets (a, p, n) or pairs (a1, p, a2, n): how many tuples the loss will see."""
    if len(tuples) == 3:
        return int(tuples[0].numel())
    return int(tuples[0].numel() + tuples[2].numel())


class TripletLoss(nn.Module):
    """TripletMarginLoss over the triplets a miner picks: TripletMarginMiner (same margin) of the
    given type, or BatchHardMiner (hardest positive and negative per anchor)."""

    def __init__(self, margin: float, miner: Miner, distance: Distance):
        super().__init__()
        from pytorch_metric_learning import distances, losses, miners

        if margin <= 0:
            raise ValueError(f"loss.margin must be > 0, got {margin}")
        metric = distances.CosineSimilarity() if distance == Distance.cosine else distances.LpDistance()
        if miner == Miner.batch_hard:
            self.miner = miners.BatchHardMiner(distance=metric)
        else:
            self.miner = miners.TripletMarginMiner(margin=margin, type_of_triplets=str(miner), distance=metric)
        self.loss = losses.TripletMarginLoss(margin=margin, distance=metric)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        triplets = self.miner(embeddings, labels)
        return self.loss(embeddings, labels, triplets), _count(triplets)


class MinedLoss(nn.Module):
    """Any pytorch-metric-learning loss, with an optional miner; both built by Hydra from YAML."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None):
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        tuples = self.miner(embeddings, labels) if self.miner is not None else None
        if tuples is None:
            return self.loss(embeddings, labels), len(labels)
        return self.loss(embeddings, labels, tuples), _count(tuples)


class ArcFaceLoss(nn.Module):
    """Additive angular margin loss over learned class centres (sizes known only at run time)."""

    def __init__(self, num_classes: int, embedding_dim: int, margin: float, scale: float, lr: float):
        super().__init__()
        from pytorch_metric_learning import losses

        if lr <= 0:
            raise ValueError(f"loss.lr must be > 0, got {lr}")
        self.lr = lr
        self.loss = losses.ArcFaceLoss(num_classes=num_classes, embedding_size=embedding_dim, margin=margin,
                                       scale=scale)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        return self.loss(embeddings, labels), len(labels)
