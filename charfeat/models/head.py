"""Projection head: backbone features -> L2-normalised style embedding."""

import torch
from torch import nn
from torch.nn import functional as F

from charfeat.config import InputNorm


class ProjectionHead(nn.Module):
    """BatchNorm -> Linear (``hidden_dim=None``) or -> Linear, LayerNorm, GELU, Dropout, Linear; then L2.

    The input BatchNorm (``input_norm="batch"``) standardises backbone features, whose offset and
    scale differ by model, layer and pooling (mean-pooled features share a large common
    component). Under torchrun each process normalises a training batch with that batch's own
    statistics (on CPU torch has no SyncBatchNorm), and the running statistics are averaged over
    the processes before every evaluation, so every rank evaluates and saves the same model; a
    multi-process run that must match a single-process one step for step uses ``input_norm="none"``.
    ``in_dim`` is the backbone's ``feature_dim`` (``backbone.embed_dim`` or its hidden size), known
    only once it is built (``_partial_``); the other arguments are the ``head`` config group's
    (``charfeat.config.HeadConfig``).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None, dropout: float, input_norm: InputNorm):
        super().__init__()
        if in_dim < 1 or out_dim < 1 or (hidden_dim is not None and hidden_dim < 1):
            raise ValueError(f"head dims must be positive: in {in_dim}, hidden {hidden_dim}, out {out_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"head.dropout must be in [0, 1), got {dropout}")
        self.in_dim, self.out_dim = in_dim, out_dim
        norm = nn.BatchNorm1d(in_dim) if input_norm == InputNorm.batch else nn.Identity()
        if hidden_dim is None:
            self.net = nn.Sequential(norm, nn.Linear(in_dim, out_dim))
        else:
            self.net = nn.Sequential(
                norm, nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU(),
                nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim),
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [B, in_dim] -> embeddings [B, out_dim] of unit length."""
        return F.normalize(self.net(features), dim=-1)
