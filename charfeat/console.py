"""What reaches the terminal: charfeat's own progress, anyone's warnings, nothing else.

Libraries talk a lot: faiss logs six loader lines per process, transformers draws a bar for every
load and save, Optuna prints through its own colour handler, alembic announces its plugins. A run's
terminal shows what charfeat is doing, its progress bar, the per-epoch lines and the table;
everything else goes only to the run's log file (``conf/hydra/job_logging/charfeat.yaml``).
"""

from __future__ import annotations

import logging
import os

from hydra.experimental.callback import Callback

OWN_LOGGERS = ("charfeat", "__main__")


class ConsoleFilter(logging.Filter):
    """Lets through INFO and above from ``own`` loggers (and their children), WARNING and above from
    any other; never a record logged with ``extra={"console": False}`` (meant for the log file)."""

    def __init__(self, own: list[str] | tuple[str, ...] = OWN_LOGGERS):
        super().__init__()
        self.own = tuple(own)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", True) is False:
            return False
        if record.levelno >= logging.WARNING:
            return True
        mine = any(record.name == name or record.name.startswith(name + ".") for name in self.own)
        return mine and record.levelno >= logging.INFO


class ConsoleHandler(logging.StreamHandler):
    """Prints each line above the progress bar (``tqdm.write``) rather than into the middle of it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:
            self.handleError(record)


class ConsoleFormatter(logging.Formatter):
    """``[12:34:56] message``; a warning or error names its level, so it is not read as progress."""

    def __init__(self):
        super().__init__("[%(asctime)s] %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            stamp, _, message = text.partition("] ")
            text = f"{stamp}] {record.levelname}: {message}"
        return text


def quiet_libraries() -> None:
    """Route library output through logging (so the console filter and the log file see it) and
    turn off the Hugging Face progress bars ("Loading weights", "Writing model shards").

    Call at the start of a job, before its work; safe to call again. A user who wants the bars
    back sets ``HF_HUB_DISABLE_PROGRESS_BARS=0``; a download turns them on for itself
    (``huggingface_hub.utils.enable_progress_bars``, which the environment variable would block).
    """
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger: console and log file
    from transformers.utils import logging as hf_logging  # ~0.7 s; every job but download loads it anyway

    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").upper() not in ("0", "FALSE", "NO", "OFF"):
        hf_logging.disable_progress_bar()  # transformers' bars and huggingface_hub's
    hf_logging.disable_default_handler()  # its own stderr handler, which bypasses the log file
    hf_logging.enable_propagation()


class QuietLibraries(Callback):
    """Hydra callback (``hydra.callbacks.quiet`` in conf/hydra/default.yaml): quiets libraries in
    every job, also jobs a launcher runs in other processes, and Optuna's own colour handler
    before an Optuna sweeper creates its study."""

    def on_job_start(self, config, **kwargs) -> None:
        quiet_libraries()

    def on_multirun_start(self, config, **kwargs) -> None:
        if "optuna" in str(config.hydra.sweeper.get("_target_", "")):
            import optuna

            optuna.logging.disable_default_handler()  # a colorlog handler: raw ANSI codes in logs
            optuna.logging.enable_propagation()


def progress(iterable=None, *, main: bool = False, **kwargs):
    """A tqdm progress bar, drawn by the main process only (under torchrun, RANK 0). ``main``: the
    run's one bar, always drawn there; any other bar (extraction, fingerprints) only on a terminal,
    so logs and captured output hold no flashing bars. ``TQDM_DISABLE=1`` turns every bar off."""
    from tqdm.auto import tqdm

    if int(os.environ.get("RANK", "0")) > 0 or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true"):
        disable = True
    else:
        disable = False if main else None  # None: tqdm draws only on a terminal
    return tqdm(iterable, disable=disable, **kwargs)
