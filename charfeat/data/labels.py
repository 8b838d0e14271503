"""The one label mapping of a run: class name -> index, in sorted (canonical) order.

Built from the training records, saved beside every checkpoint; validation labels must be
in it, since a class the model never saw cannot be scored.
"""

import json
from pathlib import Path

from charfeat.data.records import Record, RecordError


def build_label_map(records: list[Record]) -> dict[str, int]:
    return {name: index for index, name in enumerate(sorted({r.label for r in records}))}


def encode_labels(records: list[Record], label_map: dict[str, int], source: str) -> list[int]:
    """Map each record's label to its index; an unknown label is an error naming the line."""
    unknown = [r for r in records if r.label not in label_map]
    if unknown:
        first = unknown[0]
        raise RecordError(
            f"{source}:{first.line}: label {first.label!r} is not among the training classes "
            f"{sorted(label_map)} ({len(unknown)} such record(s))"
        )
    return [label_map[r.label] for r in records]


def save_label_map(label_map: dict[str, int], path: str | Path) -> None:
    Path(path).write_text(json.dumps(label_map, indent=2) + "\n", encoding="utf-8")
