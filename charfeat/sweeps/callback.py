"""The Hydra callback that reports a multirun when it ends (``hydra.callbacks.report`` in conf/hydra/default.yaml)."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from charfeat.sweeps.chart_process import ChartProcess
from charfeat.sweeps.jobs import DEFAULT_METRIC
from charfeat.sweeps.report import write_report


class ReportCallback(Callback):
    """Print and write the sweep's report when a multirun ends, by the run's ``optimized_metric``.

    conf/hydra/default.yaml is shared by every entrypoint; a multirun whose jobs write no
    metrics.json at all (embed, search) gets no report. One whose config has an
    ``optimized_metric`` (train) starts the charts' helper process when it starts (chart_process.py)."""

    chart_process: ChartProcess | None = None

    def on_multirun_start(self, config, **kwargs) -> None:
        if "optimized_metric" in config:
            self.chart_process = ChartProcess.start()

    def __getstate__(self) -> dict:
        """Without the helper: submitit pickles the launcher, callbacks included, for every job."""
        return {key: value for key, value in self.__dict__.items() if key != "chart_process"}

    def on_multirun_end(self, config, **kwargs) -> None:
        chart_process, self.chart_process = self.chart_process, None
        try:
            self.report(config, chart_process)
        finally:
            if chart_process is not None:
                chart_process.close()

    def report(self, config, chart_process: ChartProcess | None) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not any(sweep_dir.glob("**/metrics.json")):
            return
        try:
            text = write_report(sweep_dir, metric=str(config.get("optimized_metric", DEFAULT_METRIC)),
                                chart_process=chart_process)
        except Exception as exc:  # a report problem must not turn a finished sweep into a failure
            print(f"charfeat.report: no report for {sweep_dir}: {exc}", file=sys.stderr)
            return
        print(f"Sweep results ({sweep_dir}/report.html):\n{text}", flush=True)
