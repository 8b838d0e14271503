"""SIGTERM/SIGINT as a flag checked between steps, so a preempted run saves and exits cleanly."""

import signal
from pathlib import Path


class TrainingInterrupted(Exception):
    """SIGTERM/SIGINT arrived; a resumable checkpoint was saved."""

    def __init__(self, signum: int, checkpoint: Path):
        super().__init__(f"interrupted by signal {signum}; resume with ckpt_path={checkpoint}")
        self.signum = signum


class StopSignal:
    """Turns SIGTERM/SIGINT into a flag checked after each step, so a step is never cut in half."""

    def __init__(self):
        self.signum = None

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
