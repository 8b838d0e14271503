"""Loss wiring: pytorch-metric-learning's triplet loss fed by its online triplet miner."""

import torch
from torch import nn

MINERS = ("semihard", "hard", "all", "easy")
DISTANCES = ("cosine", "euclidean")


class TripletLoss(nn.Module):
    """TripletMarginLoss over the triplets a TripletMarginMiner (same margin) picks in the batch.

    Returns the loss and how many triplets were mined: zero mined triplets means the batch
    taught nothing, which a run should be able to see.
    """

    def __init__(self, margin: float = 0.2, miner: str = "semihard", distance: str = "cosine"):
        super().__init__()
        from pytorch_metric_learning import distances, losses, miners

        if margin <= 0:
            raise ValueError(f"loss.margin must be > 0, got {margin}")
        if miner not in MINERS:
            raise ValueError(f"loss.miner must be one of {MINERS}, got {miner!r}")
        if distance not in DISTANCES:
            raise ValueError(f"loss.distance must be one of {DISTANCES}, got {distance!r}")
        metric = distances.CosineSimilarity() if distance == "cosine" else distances.LpDistance()
        self.miner = miners.TripletMarginMiner(margin=margin, type_of_triplets=miner, distance=metric)
        self.loss = losses.TripletMarginLoss(margin=margin, distance=metric)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """embeddings [B, D], labels [B] -> (scalar loss, number of mined triplets)."""
        triplets = self.miner(embeddings, labels)
        return self.loss(embeddings, labels, triplets), int(triplets[0].numel())
