"""Pooling hidden states [B, T, H] into one vector per row, honouring the attention mask.

Padding never enters a pooled vector, so an image's embedding does not depend on the other
images in its batch (tested for every mode).
"""

import torch


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where `mask` is true. hidden: [B, T, H], mask: [B, T] -> [B, H]."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    counts = weights.sum(dim=1).clamp(min=1)
    return (hidden * weights).sum(dim=1) / counts


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of each row's last real token, for left or right padding. [B, T, H] -> [B, H]."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (positions * attention_mask.to(torch.long)).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
