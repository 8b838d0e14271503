"""Push a local image folder and its JSONL metadata to ``s3://<bucket>/<prefix>``.

    python -m charfeat.upload --images data/images --jsonl data/train.jsonl data/val.jsonl \\
        --bucket my-bucket --prefix characters/ [--endpoint-url http://127.0.0.1:9000]

Images go to ``<prefix><filename>`` (where ``data=s3`` looks for them), the JSONL files beside
them. Every image the metadata names must be in the folder, or nothing is uploaded. Objects
whose ETag already equals the local file's MD5 are left alone, so a rerun uploads only what
changed. Credentials come from boto3's standard chain.

Only what training reads leaves the machine: each JSONL is uploaded as the records training
reads from it (the allow-listed fields, in the current schema; bad lines left out and reported),
never the raw file with its profile fields, unless ``--keep-all-fields`` says so. A record whose
filename leaves the image folder (absolute, ``..``, a symlink out) is a bad line: its file is
never read, let alone uploaded.
"""

import argparse
import hashlib
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from charfeat.data.records import Issues, read_records, to_json


def plan(images: Path, jsonl_files: list[Path], label_field: str, start_index: int,
         keep_all_fields: bool = False) -> list[tuple[Path | bytes, str]]:
    """(local file or bytes, name under the prefix) for every image and metadata file; error if any is missing."""
    if not images.is_dir():
        raise SystemExit(f"--images {images}: not a folder")
    folder = images.resolve()
    names: dict[str, None] = {}
    metadata: list[tuple[Path | bytes, str]] = []
    issues = Issues("skip")  # bad lines do not stop the upload; each is reported below
    for path in jsonl_files:
        records = read_records(path, label_field, issues, drop_quality=(), keep_unknown=True, start_index=start_index)
        for record in records:
            if (images / record.filename).resolve().is_relative_to(folder):
                names[record.filename] = None
            else:
                issues.skipped.append(f"{path}:{record.line}: {record.filename!r} resolves outside {images}")
        body = path if keep_all_fields else "".join(json.dumps(to_json(r)) + "\n" for r in records).encode()
        metadata.append((body, path.name))
    for item in issues.skipped:
        print(f"not uploaded (bad metadata line): {item}", file=sys.stderr)
    missing = [name for name in names if not (images / name).is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} image(s) named in the metadata are not in {images}:\n  "
                         + "\n  ".join(missing))
    return [(images / name, name) for name in names] + metadata


def upload(files: list[tuple[Path | bytes, str]], bucket: str, prefix: str, client, workers: int = 16,
           create_bucket: bool = False) -> tuple[int, int]:
    """(uploaded, unchanged) counts; each item is a local file or the bytes to upload."""
    if create_bucket and bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=bucket)
    existing = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        existing.update({obj["Key"]: obj["ETag"].strip('"') for obj in page.get("Contents", [])})

    def put(item: tuple[Path | bytes, str]) -> bool:
        source, name = item
        body = source if isinstance(source, bytes) else source.read_bytes()
        if existing.get(prefix + name) == hashlib.md5(body).hexdigest():
            return False
        client.put_object(Bucket=bucket, Key=prefix + name, Body=body)
        return True

    with ThreadPoolExecutor(workers) as pool:
        done = list(pool.map(put, files))
    return sum(done), len(done) - sum(done)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m charfeat.upload", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="folder holding the images")
    parser.add_argument("--jsonl", type=Path, nargs="+", required=True, help="metadata files naming the images")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="", help="key prefix, e.g. characters/augmented/generated/")
    parser.add_argument("--endpoint-url", default=None, help="MinIO, R2, Ceph or a local server")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--profile", default=None, help="a named AWS profile; default: boto3's chain")
    parser.add_argument("--label-field", default="fashion_style")
    parser.add_argument("--start-index", "--start_index", type=int, default=0, help="older files' first index")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--create-bucket", action="store_true", help="create the bucket if it does not exist")
    parser.add_argument("--keep-all-fields", action="store_true",
                        help="upload the JSONL files as they are, every field included (profile data too)")
    args = parser.parse_args(argv)

    from charfeat.data.sources.s3 import make_client

    if args.keep_all_fields:
        print("warning: --keep-all-fields uploads every field of the JSONL files, including any profile or "
              "personal data that training never reads", file=sys.stderr)
    files = plan(args.images, args.jsonl, args.label_field, args.start_index, args.keep_all_fields)
    client = make_client(args.region, args.endpoint_url, args.profile, max_workers=args.workers)
    uploaded, unchanged = upload(files, args.bucket, args.prefix, client, args.workers, args.create_bucket)
    print(f"s3://{args.bucket}/{args.prefix}: {uploaded} uploaded, {unchanged} unchanged", file=sys.stderr)


if __name__ == "__main__":
    main()
