"""Backbone passes over a split: images -> pooled features, in batches, with a progress bar."""

from typing import Callable

import torch
from tqdm.auto import tqdm

from charfeat.data.records import Record
from charfeat.data.source import DataSource


def batched(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def encode_images(backbone: torch.nn.Module, data: DataSource, split: str, records: list[Record],
                  device: torch.device) -> torch.Tensor:
    """One batch of records -> backbone features [B, hidden] on ``device``."""
    inputs = backbone.preprocess(data.load_images(split, records))
    return backbone(**{name: value.to(device) for name, value in inputs.items()})


@torch.no_grad()
def extract_features(backbone: torch.nn.Module, data: DataSource, split: str, records: list[Record],
                     batch_size: int, device: torch.device,
                     then: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> torch.Tensor:
    """Features (or ``then(features)``) of every record, in order, gathered on the CPU."""
    out = []
    for chunk in tqdm(list(batched(records, batch_size)), desc=f"embed {split}", unit="batch", leave=False):
        out.append(then(encode_images(backbone, data, split, chunk, device)).float().cpu())
    return torch.cat(out)
