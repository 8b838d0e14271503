"""Metadata records from the labeller's JSONL files, validated line by line.

Two schemas are read, the labeller's current one and the replaced system's older one: the current
one names its image (``image_filename``, ``filename`` or ``image_path``); the older one does not,
and its filename comes from the line's position, ``aug_{start_index + line - 1:05d}.jpg``. A file is older-schema when none of its
records names an image, so a current file with one nameless record is an error, not a guess.

A filename is a path below the image folder (or S3 prefix), never outside it: one that is
absolute or has a ``..`` part is a bad record, so a JSONL line cannot make training read, or
``charfeat.upload`` ship, any other file. Files are UTF-8, with or without a byte-order mark.

Only the fields charfeat uses are kept: any other key (older files carry profile information)
is dropped on read, so it never reaches logs, W&B or checkpoints. Messages name file, line and
key, never a record's content.
"""

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from charfeat.config import LabelField, OnBadRecord, TextMode
from charfeat.errors import UserError

# image_metadata keys charfeat reads; everything else is dropped on read
METADATA_KEYS = ("fashion_style", "shot_type", "visual_quality", "physical_features", "caption", "vibe_category")
FILENAME_KEYS = ("filename", "image_filename", "image_path")
UNKNOWN = "Unknown"


def _check_choice(key: str, value: str, choice: type) -> None:
    """For callers that do not come through the config schema (which checks choices itself)."""
    if value not in choice.__members__:
        raise ValueError(f"{key} must be one of {', '.join(choice.__members__)}, got {value!r}")


class RecordError(UserError, ValueError):
    """A metadata file or line that cannot be trained on; the message names file and line."""


@dataclass(frozen=True)
class Record:
    id: str
    filename: str
    label: str
    metadata: dict = field(default_factory=dict, compare=False)
    line: int = 0
    group: str | None = None  # data.group_field's value: records of one group stay in one split

    @property
    def text_input(self) -> str:
        return text_input(self.metadata)


def to_json(record: Record) -> dict:
    """The record as training reads it, in the labeller's current schema: the allow-listed fields only."""
    return {"id": record.id, "image_filename": record.filename, "image_metadata": dict(record.metadata)}


def text_input(metadata: dict, leave_out: str | None = None) -> str:
    """The replaced system's text template, so processed files stay interchangeable with its own.

    ``leave_out``: a value (the record's label) whose Style or Vibe clause is dropped, so the
    text never hands a model its own label."""
    features = metadata.get("physical_features") or []
    if isinstance(features, str):
        features = [features]
    style = metadata.get("fashion_style") or UNKNOWN
    vibe = metadata.get("vibe_category") or UNKNOWN
    parts = [] if style == leave_out else [f"Style: {style}."]
    parts.append(f"Features: {', '.join(map(str, features))}.")
    if vibe != leave_out:
        parts.append(f"Vibe: {vibe}.")
    if metadata.get("caption"):
        parts.append(f"Caption: {metadata['caption']}")
    return " ".join(parts)


def record_text(record: Record, mode: TextMode) -> str | None:
    """The record's own text for `backbone.text`: None, its caption, or the labeller's text input.

    text_input follows the replaced system's format (``Style: ... Features: ... Vibe: ... Caption: ...``)
    but drops the field that holds the record's label, so the label is never handed to the model.
    Captions are free text and may still name the label.
    """
    meta = record.metadata
    caption = str(meta.get("caption") or "").strip()
    if mode == TextMode.none:
        return None
    if mode == TextMode.caption:
        return caption or None
    _check_choice("backbone.text", mode, TextMode)
    return text_input({**meta, "caption": caption}, leave_out=record.label)


class Issues:
    """Bad records and images: raised at once under ``error``, collected and counted under ``skip``."""

    def __init__(self, policy: OnBadRecord):
        _check_choice("data.on_bad_record", policy, OnBadRecord)  # also called from Python (preprocess, upload)
        self.policy = policy
        self.skipped: list[str] = []   # "<where>: <reason>" per skipped record or image
        self.filtered: dict[str, int] = {}  # reason -> count, for records left out on purpose

    def bad(self, where: str, reason: str, error: type[Exception] = RecordError) -> None:
        if self.policy == OnBadRecord.error:
            raise error(f"{where}: {reason}")
        self.skipped.append(f"{where}: {reason}")

    def filter(self, reason: str) -> None:
        self.filtered[reason] = self.filtered.get(reason, 0) + 1


def _named_file(raw: dict) -> str | None:
    for key in FILENAME_KEYS:
        if raw.get(key):
            return os.path.basename(str(raw[key])) if key == "image_path" else str(raw[key])
    return None


def unsafe_filename(name: str) -> str | None:
    """Why ``name`` could leave the folder it is joined to (absolute, a ``..`` part, a NUL), or None.

    A backslash counts as a separator when looking for ``..``, as a Windows tool would read it."""
    parts = re.split(r"[/\\]", name)
    if PurePosixPath(name).is_absolute() or name.startswith("~"):
        return f"filename {name!r} is an absolute or home path; it must be relative to the image folder"
    if ".." in parts:
        return f"filename {name!r} has a '..' part; it must stay inside the image folder"
    if "\0" in name or not name.strip() or name.endswith(("/", "\\")):
        return f"filename {name!r} does not name a file"
    return None


def _lines(path: Path, issues: Issues):
    """(line number, text) of each line, decoded as UTF-8 (a leading byte-order mark is dropped);
    a line that is not UTF-8 is a bad record naming its line and byte."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                issues.bad(f"{path}:{lineno}", f"not UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})")


def _parse(path: Path, issues: Issues) -> list[tuple[int, dict]]:
    rows = []
    for lineno, text in _lines(path, issues):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            issues.bad(f"{path}:{lineno}", f"invalid JSON ({err.msg} at column {err.colno})")
            continue
        if not isinstance(raw, dict):
            issues.bad(f"{path}:{lineno}", f"expected a JSON object, got {type(raw).__name__}")
            continue
        rows.append((lineno, raw))
    return rows


def read_records(path: str | Path, label_field: str = "fashion_style", issues: Issues | None = None,
                 drop_quality: tuple[str, ...] | list[str] = ("Low",), keep_unknown: bool = False,
                 start_index: int = 0, group_field: str | None = None) -> list[Record]:
    """Parse one JSONL file (either schema); bad records go to ``issues`` (default: raise RecordError).

    ``group_field``: the key (in image_metadata or at the top level) whose value is each record's
    group; a record without one is a bad record."""
    _check_choice("data.label_field", label_field, LabelField)
    issues = issues or Issues(OnBadRecord.error)
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: metadata file not found")
    before = len(issues.skipped) + sum(issues.filtered.values())
    rows = _parse(path, issues)
    positional = not any(any(raw.get(key) for key in FILENAME_KEYS) for _, raw in rows)
    records: list[Record] = []
    seen_ids: dict[str, int] = {}
    seen_files: dict[str, int] = {}
    for lineno, raw in rows:
        where = f"{path}:{lineno}"
        nested = raw.get("image_metadata")
        nested = nested if isinstance(nested, dict) else {}
        metadata = {key: nested.get(key, raw.get(key)) for key in METADATA_KEYS
                    if nested.get(key, raw.get(key)) is not None}
        if metadata.get("visual_quality") in drop_quality:
            issues.filter(f"visual_quality {metadata['visual_quality']}")
            continue
        label = metadata.get(label_field)
        if not isinstance(label, str) or not label.strip() or (label == UNKNOWN and not keep_unknown):
            issues.bad(where, f"missing label '{label_field}'" + (" (Unknown)" if label == UNKNOWN else ""))
            continue
        if positional:
            filename = f"aug_{start_index + lineno - 1:05d}.jpg"
            record_id = str(raw.get("id") or Path(filename).stem)
        else:
            filename = _named_file(raw)
            if not filename:
                issues.bad(where, f"missing filename (one of {', '.join(FILENAME_KEYS)})")
                continue
            if unsafe_filename(filename):
                issues.bad(where, unsafe_filename(filename))
                continue
            if not raw.get("id"):
                issues.bad(where, "missing id")
                continue
            record_id = str(raw["id"])
        if record_id in seen_ids:
            issues.bad(where, f"duplicate id {record_id!r} (first on line {seen_ids[record_id]})")
            continue
        if filename in seen_files:
            issues.bad(where, f"duplicate filename {filename!r} (first on line {seen_files[filename]})")
            continue
        group = nested.get(group_field, raw.get(group_field)) if group_field else None
        if group_field and (group is None or isinstance(group, (dict, list)) or not str(group).strip()):
            issues.bad(where, f"missing group '{group_field}' (data.group_field)")
            continue
        seen_ids[record_id] = seen_files[filename] = lineno
        records.append(Record(record_id, filename, label, metadata, lineno, None if group is None else str(group)))
    if not records:
        left_out = len(issues.skipped) + sum(issues.filtered.values()) - before
        raise RecordError(f"{path}: no usable records" + (f" ({left_out} left out)" if left_out else " (empty file)"))
    return records
