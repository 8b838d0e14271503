"""SIGTERM, SIGINT and SIGUSR2 as a flag checked between steps, so a preempted run saves and exits cleanly.

SLURM sends SIGTERM when it preempts a job; submitit asks for SIGUSR2 shortly before a time-out and
handles it by requeueing the job. The training loop saves ``last.pt`` after the current step, then
hands the signal to the handler that was there before (submitit's, which requeues the same job;
the requeued run finds its own ``last.pt`` and resumes from it), or exits with 128 + the signal.
"""

import signal
from pathlib import Path

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class TrainingInterrupted(Exception):
    """A signal arrived; a resumable checkpoint was saved."""

    def __init__(self, signum: int, checkpoint: Path, previous_handler=None):
        super().__init__(f"interrupted by {signal.Signals(signum).name}; resume with ckpt_path={checkpoint} "
                         "(a requeued job in the same output dir resumes from it by itself)")
        self.signum = signum
        self.previous_handler = previous_handler

    def hand_over(self) -> None:
        """Call the Python handler this signal had before training (submitit's requeue, which exits)."""
        handler = self.previous_handler
        if callable(handler) and handler is not signal.default_int_handler:
            handler(self.signum, None)


class StopSignal:
    """Turns SIGTERM/SIGINT/SIGUSR2 into a flag checked after each step, so a step is never cut in half."""

    def __init__(self):
        self.signum = None

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def previous(self, signum: int):
        return self._previous.get(signum)

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
