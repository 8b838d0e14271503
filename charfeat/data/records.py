"""Metadata records from the labeller's JSONL files, validated line by line.

Only the fields charfeat uses are kept: any other top-level key (older files carry profile
information) is dropped on read, so it never reaches logs, W&B or checkpoints.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


class RecordError(ValueError):
    """A metadata file or line that cannot be trained on; the message names file and line."""


@dataclass(frozen=True)
class Record:
    id: str
    filename: str
    label: str
    metadata: dict = field(default_factory=dict, compare=False)
    line: int = 0


def _filename(raw: dict) -> str | None:
    for key in ("filename", "image_filename"):
        if raw.get(key):
            return str(raw[key])
    if raw.get("image_path"):
        return os.path.basename(str(raw["image_path"]))
    return None


def read_records(path: str | Path, label_field: str = "fashion_style") -> list[Record]:
    """Parse one JSONL file; raise RecordError naming ``path:line`` on the first bad record."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: metadata file not found")
    records: list[Record] = []
    seen_ids: dict[str, int] = {}
    seen_files: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as err:
                raise RecordError(f"{where}: invalid JSON ({err.msg})") from None
            if not isinstance(raw, dict):
                raise RecordError(f"{where}: expected a JSON object, got {type(raw).__name__}")
            metadata = raw.get("image_metadata") or {}
            label = metadata.get(label_field, raw.get(label_field))
            if not label or not isinstance(label, str):
                raise RecordError(f"{where}: missing label field {label_field!r}")
            filename = _filename(raw)
            if not filename:
                raise RecordError(f"{where}: no filename (filename, image_filename or image_path)")
            record_id = str(raw.get("id") or Path(filename).stem)
            if record_id in seen_ids:
                raise RecordError(f"{where}: duplicate id {record_id!r} (first on line {seen_ids[record_id]})")
            if filename in seen_files:
                raise RecordError(f"{where}: duplicate filename {filename!r} (first on line {seen_files[filename]})")
            seen_ids[record_id] = seen_files[filename] = lineno
            records.append(Record(record_id, filename, label, dict(metadata), lineno))
    if not records:
        raise RecordError(f"{path}: no records")
    return records
