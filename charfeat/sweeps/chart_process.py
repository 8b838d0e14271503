"""A helper process that draws a multirun's charts, started when the multirun starts.

Drawing the report's charts needs matplotlib, whose import takes about 0.35 s, and in a process
that ran every job of the sweep, the objects it creates also set off a full garbage collection
over all of them (about 0.2 s more): together most of what the report costs. The helper is a
fresh interpreter started by ``ReportCallback.on_multirun_start``. It lowers its own priority,
imports matplotlib while the jobs run (on a core they leave idle, or in their gaps), then waits.
At the end the report sends it the jobs and keys, and it sends back the SVGs, the same bytes
the report would draw itself.

Anything wrong with the helper (it did not start, it died, it failed to draw, it took too long)
and the report draws its charts in its own process, as without it; an error in drawing then
shows up there.

    python -m charfeat.sweeps.chart_process     # the helper: a pickled request on stdin, SVGs on stdout
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

from charfeat.sweeps.jobs import Job

TIMEOUT_S = 300  # for the helper's answer; a few charts take it well under a second


class ChartProcess:
    """The helper process; ``draw`` asks it for a sweep's charts once, ``close`` ends it unused."""

    def __init__(self, process: subprocess.Popen):
        self.process = process

    @classmethod
    def start(cls) -> ChartProcess | None:
        """Start the helper (None when it cannot be: the report then draws its charts itself)."""
        try:
            return cls(subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        except OSError:
            return None

    def draw(self, jobs: list[Job], keys: list[str], metric: str) -> list[str] | None:
        """The SVG of ``metric`` against each of ``keys`` (``charts.chart_svg``), drawn by the helper;
        None when it cannot give them."""
        try:
            out, _ = self.process.communicate(pickle.dumps((jobs, keys, metric)), timeout=TIMEOUT_S)
            if self.process.returncode == 0:
                svgs = pickle.loads(out)
                if isinstance(svgs, list) and len(svgs) == len(keys) and all(isinstance(s, str) for s in svgs):
                    return svgs
        except Exception:  # noqa: BLE001 - whatever went wrong, the report draws the charts itself
            pass
        self.close()
        return None

    def close(self) -> None:
        """End the helper if it is still running (it exits by itself when its input closes)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None and not stream.closed:
                stream.close()


def main() -> None:
    if hasattr(os, "nice"):
        os.nice(10)  # the sweep's jobs come first
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a library's print cannot corrupt the answer
    import matplotlib.backends.backend_svg  # noqa: F401 - the imports this process exists to do early
    import matplotlib.figure  # noqa: F401

    from charfeat.sweeps.charts import chart_svg

    try:
        jobs, keys, metric = pickle.load(sys.stdin.buffer)
    except EOFError:  # the multirun ended without asking (no report, or it failed)
        return
    with answer:
        pickle.dump([chart_svg(jobs, key, metric) for key in keys], answer)


if __name__ == "__main__":
    main()
