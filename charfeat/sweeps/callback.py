"""The Hydra callback that reports a multirun when it ends (``hydra.callbacks.report`` in conf/hydra/default.yaml)."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from charfeat.sweeps.jobs import DEFAULT_METRIC
from charfeat.sweeps.report import write_report


class ReportCallback(Callback):
    """Print and write the sweep's report when a multirun ends, by the run's ``optimized_metric``.

    conf/hydra/default.yaml is shared by every entrypoint; a multirun whose jobs write no
    metrics.json at all (embed, search) gets no report."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not any(sweep_dir.glob("**/metrics.json")):
            return
        try:
            text = write_report(sweep_dir, metric=str(config.get("optimized_metric", DEFAULT_METRIC)))
        except Exception as exc:  # a report problem must not turn a finished sweep into a failure
            print(f"charfeat.report: no report for {sweep_dir}: {exc}", file=sys.stderr)
            return
        print(f"Sweep results ({sweep_dir}/report.html):\n{text}", flush=True)
