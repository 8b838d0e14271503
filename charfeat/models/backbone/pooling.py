"""Pooling hidden states [B, T, H] into one float32 vector per row, honouring the attention mask.

Padding never enters a pooled vector, not even as a NaN (it is masked out, not multiplied by zero),
so an image's embedding does not depend on the other images in its batch (tested for every mode).
Sums accumulate in float32 whatever the model's dtype: a bfloat16 sum over hundreds of tokens would
keep 8 bits of the mean.
"""

import torch


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """float32 mean over the positions where `mask` is true. hidden: [B, T, H], mask: [B, T] -> [B, H].

    A row with no position to pool is an error, never a zero vector."""
    counts = mask.sum(dim=1, keepdim=True)
    if not bool((counts > 0).all()):
        rows = (counts.flatten() == 0).nonzero().flatten().tolist()
        raise ValueError(f"masked mean: row(s) {rows} have no position to pool")
    total = hidden.masked_fill(~mask.unsqueeze(-1), 0).sum(dim=1, dtype=torch.float32)
    return total / counts.to(torch.float32)


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """float32 hidden state of each row's last real token, for left or right padding. [B, T, H] -> [B, H]."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (positions * attention_mask.to(torch.long)).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
