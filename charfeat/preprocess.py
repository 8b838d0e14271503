"""Raw labeller JSONL (either schema) -> processed JSONL plus the one label mapping.

    python -m charfeat.preprocess --input raw.jsonl --output processed.jsonl \\
        --mapping-output label_mapping.json [--start-index N]

The replaced system's options (``--mapping_output``, ``--start_index``) are accepted too. Each
output line holds ``id``, ``filename``, ``text_input`` (the replaced system's template) and the
``image_metadata`` fields charfeat uses; nothing else from the input is copied. The mapping is
sorted by class name, the same order training builds, and training reads either file.
"""

import argparse
import json
import sys
from pathlib import Path

from charfeat.data.labels import build_label_map, keep_known_labels, load_label_map, save_label_map
from charfeat.config import LabelField, OnBadRecord
from charfeat.data.records import Issues, RecordError, read_records


def preprocess(input_path: Path, output: Path, mapping_output: Path, label_field: str = "fashion_style",
               start_index: int = 0, on_bad_record: str = "error", drop_quality: tuple = ("Low",),
               keep_unknown: bool = False, mapping: Path | None = None) -> Issues:
    """Write ``output`` and ``mapping_output`` (atomically); return what was left out and why."""
    issues = Issues(on_bad_record)
    records = read_records(input_path, label_field, issues, drop_quality, keep_unknown, start_index)
    label_map = load_label_map(mapping) if mapping else build_label_map(records)
    records = keep_known_labels(records, label_map, str(input_path), issues)
    if not records:
        raise RecordError(f"{input_path}: no records left whose label is in {mapping}")
    lines = [json.dumps({"id": r.id, "filename": r.filename, "text_input": r.text_input,
                         "image_metadata": r.metadata}, ensure_ascii=False) + "\n" for r in records]
    for path, write in ((output, lambda p: p.write_text("".join(lines), encoding="utf-8")),
                        (mapping_output, lambda p: save_label_map(label_map, p))):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        write(tmp)
        tmp.replace(path)
    return issues


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m charfeat.preprocess", description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--mapping-output", "--mapping_output", dest="mapping_output", type=Path, required=True)
    parser.add_argument("--start-index", "--start_index", dest="start_index", type=int, default=0,
                        help="older files: index of the first line's image, aug_{index:05d}.jpg")
    parser.add_argument("--label-field", choices=list(LabelField.__members__), default="fashion_style")
    parser.add_argument("--on-bad-record", choices=list(OnBadRecord.__members__), default="error")
    parser.add_argument("--drop-quality", nargs="*", default=["Low"], help="visual_quality values to leave out")
    parser.add_argument("--keep-unknown", action="store_true", help='keep "Unknown" as a class')
    parser.add_argument("--mapping", type=Path, default=None,
                        help="an existing label mapping (e.g. the training set's, for a val file)")
    args = parser.parse_args(argv)
    try:
        issues = preprocess(args.input, args.output, args.mapping_output, args.label_field, args.start_index,
                            args.on_bad_record, tuple(args.drop_quality), args.keep_unknown, args.mapping)
    except RecordError as err:
        raise SystemExit(f"error: {err}") from None
    for reason, count in issues.filtered.items():
        print(f"left out by filter: {count} record(s) with {reason}", file=sys.stderr)
    if issues.skipped:
        print(f"skipped {len(issues.skipped)} bad record(s):", *issues.skipped, sep="\n  ", file=sys.stderr)
    print(f"wrote {args.output} and {args.mapping_output}", file=sys.stderr)


if __name__ == "__main__":
    main()
