"""A multirun's results as one table, charts of a metric against each swept key, and an HTML page.

    python -m charfeat.report outputs/train/multiruns/<date_time>
    python -m charfeat.report <sweep dir> --metric precision_at_1

Every job dir under the sweep dir is one row: its overrides and the metrics from its
metrics.json; a job without metrics.json is listed as failed. Writes report.csv, report.md,
report_<metric>_vs_<key>.svg (one per swept key) and report.html into the sweep dir
(charfeat/sweeps/report.py). A multirun's end does the same (charfeat/sweeps/callback.py).
"""

import argparse
import sys
from pathlib import Path

from charfeat.sweeps.jobs import DEFAULT_METRIC
from charfeat.sweeps.report import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m charfeat.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun dir, e.g. outputs/train/multiruns/<date_time>")
    parser.add_argument("--metric", default=DEFAULT_METRIC,
                        help="metric (a key of metrics.json) to plot and pick the best job by (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        text = write_report(args.sweep_dir, metric=args.metric)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    print(text)
    print(f"\nwrote {args.sweep_dir}/report.csv, report.md, report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
