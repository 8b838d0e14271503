"""A seeded, stratified train/val split for when no validation file is given.

Each class keeps the same share in both splits (a plain random split of a 73 %-majority set
can leave a small class out of validation). The result depends only on the records' ids,
the fraction and the seed, never on file order.
"""

import random

from charfeat.data.records import Record


def stratified_split(records: list[Record], val_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """(train, val): about ``val_fraction`` of each class to val; a class keeps at least one train record."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    rng = random.Random(seed)
    val_ids: set[str] = set()
    for label in sorted({r.label for r in records}):
        ids = sorted(r.id for r in records if r.label == label)
        rng.shuffle(ids)
        val_ids.update(ids[:min(len(ids) - 1, round(len(ids) * val_fraction))])
    return [r for r in records if r.id not in val_ids], [r for r in records if r.id in val_ids]
