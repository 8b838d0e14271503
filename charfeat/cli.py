"""How charfeat's Hydra entry points behave on the command line.

``@hydra_main("train")`` is ``@hydra.main`` with charfeat's config package, plus:

- ``--help`` answers in well under two seconds. Hydra's own help lists the options of every group
  by building a config repository per group (about 2 s here); charfeat's (`charfeat.help`)
  composes once and describes each key from its schema.
- An error caused by the user's input or config (``charfeat.errors.UserError``, also when Hydra's
  instantiate wrapped it, and a required key left unset) prints one line, ``error: <message>``, and
  exits with status 1. The traceback goes to the run's log file; ``HYDRA_FULL_ERROR=1`` prints it
  as Hydra does. In a multirun the job fails with that line and the sweep goes on as Hydra's does.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any, Callable

import hydra
from omegaconf import DictConfig, OmegaConf

from charfeat.errors import ConfigError, UserError

log = logging.getLogger(__name__)
# Hydra flags after which --help is not charfeat's to answer (another config dir or name)
HYDRA_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--hydra-help")


def hydra_main(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """``@hydra.main(version_base="1.3", config_path="pkg://charfeat.conf", config_name=...)`` with
    the fast ``--help`` and one-line user errors described above."""

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        hydra_entry = hydra.main(version_base="1.3", config_path="pkg://charfeat.conf",
                                 config_name=config_name)(one_line_user_errors(task))
        SUMMARIES[config_name] = (sys.modules[task.__module__].__doc__ or "").strip().split("\n")[0]
        OmegaConf.register_new_resolver("charfeat.summary", command_summary, replace=True)

        @functools.wraps(hydra_entry)
        def main() -> Any:
            argv = sys.argv[1:]
            if {"--help", "-h"} & set(argv) and not set(HYDRA_CONFIG_FLAGS) & set(argv):
                print_help(config_name, [arg for arg in argv if not arg.startswith("-")])
            return hydra_entry()

        return main

    return decorate


def print_help(config_name: str, overrides: list[str]) -> None:
    """Print ``python -m charfeat.<config_name> [overrides] --help`` and exit 0, as Hydra's help does."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from charfeat.help import render_help

    try:
        text = render_help(config_name, overrides)
    except (HydraException, OmegaConfBaseException) as err:  # a bad override: said as Hydra says it
        print(err, *([err.__cause__] if isinstance(err.__cause__, OmegaConfBaseException) else []), sep="\n",
              file=sys.stderr)
        sys.exit(1)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `--help | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)


SUMMARIES: dict[str, str] = {}  # entry point (its config name) -> the first line of its docstring


def command_summary() -> str:
    """``${charfeat.summary:}`` in the help template: what the running command does."""
    from hydra.core.hydra_config import HydraConfig

    return SUMMARIES.get(HydraConfig.get().job.name, "")


def one_line_user_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """The task function, with unset required keys refused up front and user errors as one line."""

    @functools.wraps(task)
    def run(cfg: DictConfig) -> Any:
        try:
            refuse_missing_keys(cfg)
            return task(cfg)
        except Exception as err:
            user_error = find_user_error(err)
            if user_error is None:
                raise
            report_user_error(user_error, err)

    return run


def refuse_missing_keys(cfg: DictConfig) -> None:
    """A key the schema requires (``???``) that nothing set: one error naming every such key."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        settings = " ".join(f"{key}=..." for key in missing)
        raise ConfigError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required but not set: "
                          f"add {settings} to the command line")


def find_user_error(err: BaseException) -> UserError | None:
    """``err`` itself or the UserError it wraps (Hydra's instantiate raises InstantiationException from it)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def report_user_error(user_error: UserError, raised: Exception) -> None:
    """Log the traceback to the log file only, then print one line and exit (status 1); in a multirun,
    fail the job with that line instead, so the sweep runs its other jobs."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import CompactHydraException
    from hydra.types import RunMode

    message = f"error: {user_error}"
    log.error("%s", message, exc_info=raised, extra={"console": False})
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise raised
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise CompactHydraException(message) from None
    print(message, file=sys.stderr)
    sys.exit(1)
