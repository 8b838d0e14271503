"""per_query.npz: each answerable query's value of each metric, per row, with the query ids.

What a sweep's paired bootstrap needs: two jobs scored on the same queries (same ids, same order)
can be compared query by query. numpy only, so the sweep report reads it without torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PER_QUERY = "per_query.npz"


def write_per_query(path: Path, ids: list[str], values: dict[str, dict[str, np.ndarray]]) -> None:
    """``values``: {row: {metric: [Q]}}, in the order of ``ids`` (the answerable queries)."""
    arrays = {f"{row}/{metric}": np.asarray(v, dtype=np.float64) for row, metrics in values.items()
              for metric, v in metrics.items()}
    bad = [key for key, v in arrays.items() if v.shape != (len(ids),)]
    if bad:
        raise ValueError(f"{path}: {bad} do not have one value per query ({len(ids)})")
    with open(path, "wb") as f:
        np.savez_compressed(f, id=np.asarray(ids, dtype=str), **arrays)


def read_per_query(path: Path) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """(ids [Q], {row: {metric: [Q]}}) from a file written by `write_per_query`."""
    with np.load(path, allow_pickle=False) as data:
        values: dict[str, dict[str, np.ndarray]] = {}
        for key in data.files:
            if key != "id":
                row, _, metric = key.partition("/")
                values.setdefault(row, {})[metric] = data[key]
        return data["id"], values
