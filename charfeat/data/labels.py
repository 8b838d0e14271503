"""The one label mapping of a run: class name -> index, in sorted (canonical) order.

Built from the training records, saved beside every checkpoint; validation labels must be
in it, since a class the model never saw cannot be scored.
"""

import json
from pathlib import Path

from charfeat.data.records import Issues, Record, RecordError


def build_label_map(records: list[Record]) -> dict[str, int]:
    return {name: index for index, name in enumerate(sorted({r.label for r in records}))}


def keep_known_labels(records: list[Record], label_map: dict[str, int], source: str, issues: Issues) -> list[Record]:
    """Records whose label is in the mapping; each other one is a bad record (error or skip)."""
    kept = []
    for record in records:
        if record.label in label_map:
            kept.append(record)
        else:
            issues.bad(f"{source}:{record.line}", f"label {record.label!r} is not in the label mapping "
                                                  f"{sorted(label_map)}")
    return kept


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


def load_label_map(path: str | Path) -> dict[str, int]:
    """A mapping file, checked: a flat object of distinct indices 0..n-1."""
    mapping = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(mapping, dict) or sorted(mapping.values()) != list(range(len(mapping))):
        raise RecordError(f"{path}: a label mapping must be a flat JSON object of names to indices 0..n-1")
    return mapping


def save_label_map(label_map: dict[str, int], path: str | Path) -> None:
    Path(path).write_text(json.dumps(label_map, indent=2) + "\n", encoding="utf-8")
