"""Batches of model inputs sized by tokens, cut into smaller ones, and split when a GPU runs out of memory.

A batch's cost is its padded token count (rows × the longest row), not its image count: one
phone photo at the pixel budget is a few hundred tokens, a thumbnail a few dozen. `token_batches`
packs length-sorted items under ``backbone.max_tokens_per_batch``; `select_rows` cuts a processor
output (input ids, masks, pixel patches, grids) to some of its rows, dropping the padding they no
longer need; `split_on_oom` runs a batch that did not fit as two halves, once, with a warning.
Pooling ignores padding, so none of this changes a feature (batch invariance, tested).
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

log = logging.getLogger(__name__)
ROW_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")  # [B, L] tensors, padded on the right


def padded_tokens(lengths: list[int]) -> int:
    """What a batch of sequences of these lengths costs: rows × the longest."""
    return len(lengths) * max(lengths, default=0)


def token_batches(lengths: list[int], max_size: int | None, max_tokens: int | None) -> list[list[int]]:
    """Consecutive positions of ``lengths`` (sort them first to keep padding low) in batches of at
    most ``max_size`` items and ``max_tokens`` padded tokens (None: no such limit); an item longer
    than ``max_tokens`` on its own is a batch of its own (the caller decides whether that is an error)."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for position, length in enumerate(lengths):
        fits = (max_size is None or len(current) < max_size) and (max_tokens is None or (len(current) + 1) * max(longest, length) <= max_tokens)
        if current and not fits:
            batches.append(current)
            current, longest = [], 0
        current.append(position)
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches


def batch_size(inputs: dict[str, torch.Tensor]) -> int:
    return int(inputs["input_ids"].shape[0])


def select_rows(inputs: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    """The inputs of ``rows`` only: their token rows (trailing all-padding columns dropped), their
    images' pixel patches and grids."""
    index = torch.as_tensor(rows, dtype=torch.long)
    out = {key: inputs[key][index] for key in ROW_KEYS if key in inputs}
    width = int(out["attention_mask"].sum(dim=1).max())
    out = {key: value[:, :width] for key, value in out.items()}
    if "image_grid_thw" in inputs:
        grids = inputs["image_grid_thw"]
        starts = torch.cat([grids.new_zeros(1), grids.prod(dim=1).cumsum(0)])
        out["pixel_values"] = torch.cat([inputs["pixel_values"][starts[r]:starts[r + 1]] for r in rows])
        out["image_grid_thw"] = grids[index]
    return out


def split_on_oom(run: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                 inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """``run(inputs)``; if that runs out of accelerator memory, ``run`` on each half of the rows,
    once (a half that does not fit either fails), and their results concatenated, with a warning.
    For passes without gradients: a pass with them may have left partial gradients behind."""
    try:
        return run(inputs)
    except torch.OutOfMemoryError:
        if batch_size(inputs) < 2:
            raise
    # retried outside the except block: the failed attempt's traceback holds its activations
    return torch.cat([run(select_rows(inputs, rows)) for rows in halves_after_oom(inputs, "a batch")])


def halves_after_oom(inputs: dict[str, torch.Tensor], what: str) -> list[list[int]]:
    """After ``inputs`` (``what``: which batch) ran out of accelerator memory: the allocator's cache
    freed, a warning, and the two halves of its rows to run instead."""
    rows = batch_size(inputs)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.warning("out of memory on %s of %d images (%d tokens): running it as two halves; set "
                "backbone.max_tokens_per_batch below that to avoid the retry", what, rows,
                rows * inputs["input_ids"].shape[1])
    half = (rows + 1) // 2
    return [list(range(half)), list(range(half, rows))]
