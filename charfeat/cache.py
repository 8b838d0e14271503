"""List, prune or clear charfeat's caches (S3 objects, frozen features, leak-check fingerprints, sample sets).

    python -m charfeat.cache list
    python -m charfeat.cache prune --older-than 30d [s3 features fingerprints sample_data]
    python -m charfeat.cache clear [s3 features fingerprints sample_data]

The cache dir is ``--cache-dir``, else ``CHARFEAT_CACHE_DIR``, else ``~/.cache/charfeat`` (where
``paths.cache_dir`` points by default). ``prune`` removes what no run has used for that long;
``clear`` removes everything; both only touch files charfeat itself writes there.
"""

import argparse
import sys
import time
from pathlib import Path

from charfeat.caches import CACHES, clear, default_root, entries, parse_duration, prune


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


def list_caches(root: Path) -> str:
    lines = [f"{root}", f"{'cache':<12} {'entries':>8} {'size':>9}  {'least recently used':<19}  most recently used"]
    for name in CACHES:
        found = entries(root, name)
        used = [e.used for e in found]
        lines.append(f"{name:<12} {len(found):>8} {_size(sum(e.size for e in found)):>9}  "
                     f"{_when(min(used, default=None)):<19}  {_when(max(used, default=None))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m charfeat.cache", description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: CHARFEAT_CACHE_DIR or ~/.cache/charfeat")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="entries, size and last use of each cache")
    for name, text in (("prune", "remove entries no run has used for a while"), ("clear", "remove every entry")):
        command = commands.add_parser(name, help=text)
        if name == "prune":
            command.add_argument("--older-than", required=True, help="e.g. 30d, 12h, 2w")
        command.add_argument("caches", nargs="*", metavar="CACHE",
                             help=f"which of {', '.join(CACHES)} (default: all)")
    args = parser.parse_args(argv)
    root = (args.cache_dir or default_root()).expanduser()
    unknown = [name for name in getattr(args, "caches", []) if name not in CACHES]
    if unknown:
        parser.error(f"unknown cache(s) {', '.join(unknown)}: choose from {', '.join(CACHES)}")
    args.caches = getattr(args, "caches", None) or list(CACHES)
    if args.command == "list":
        print(list_caches(root))
        return
    try:
        removed, size = (prune(root, parse_duration(args.older_than), args.caches) if args.command == "prune"
                         else clear(root, args.caches))
    except ValueError as err:
        parser.error(str(err))
    print(f"{root}: removed {removed} entr{'y' if removed == 1 else 'ies'} ({_size(size)}) from "
          f"{', '.join(args.caches)}", file=sys.stderr)


if __name__ == "__main__":
    main()
