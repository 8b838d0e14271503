"""Hydra's basic grid sweeper, with each job's config composed once instead of twice, on every core.

The basic sweeper composes every job of a batch up front, so that a bad override fails before
any job runs; then Hydra's in-process launcher composes each job again to run it. Composing the
train config takes about 0.1 s of pure Python, which made these compositions the largest cost a
sweep adds to its jobs' own work once their features are cached (experiments/sweep_cost). Here
the up-front compositions are split across forked processes, one per core, and the in-process
launcher is handed them instead of composing again. A launcher that runs jobs in other
processes (submitit, joblib) composes there anyway: with one, nothing is kept.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

IN_PROCESS_LAUNCHER = f"{BasicLauncher.__module__}.{BasicLauncher.__name__}"
MAX_KEPT = 100  # composed configs held at once (about 0.35 MB each); later jobs of a bigger batch compose again
JOBS_PER_PROCESS = 3  # fewer jobs than this per core are composed here: a fork costs about what a job does

_worker: dict[str, Any] = {}  # a composing process's loader and master config, inherited from the sweeper


def _start_worker(loader: Any, master_config: DictConfig) -> None:
    _worker.update(loader=loader, master_config=master_config)


def _compose_in_worker(job: tuple[list[str], bool]) -> DictConfig | bool | None:
    """One job's config (``job``: its overrides, whether to return the config or only True); None
    when it cannot be composed: the sweeper composes that job itself, for Hydra's own error."""
    overrides, wanted = job
    try:
        config = _worker["loader"].load_sweep_config(_worker["master_config"], overrides)
    except Exception:  # noqa: BLE001 - re-raised by the sweeper's own composition, as Hydra's exception
        return None
    return config if wanted else True


def compose_batch(loader: Any, master_config: DictConfig, batch: Sequence[Sequence[str]], keep: int) -> list:
    """Compose every job of ``batch`` in order, raising Hydra's error for the first that cannot be;
    return the configs of the first ``keep`` jobs. More than a few jobs per core go to forked
    processes (not from a process with threads running: a fork copies their locks, not the threads)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    processes = min(cores, len(batch) // JOBS_PER_PROCESS)
    jobs = [(list(overrides), i < keep) for i, overrides in enumerate(batch)]
    if processes > 1 and threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        sys.stdout.flush()  # a fork that exits on its own would write what these buffers hold again
        sys.stderr.flush()
        with multiprocessing.get_context("fork").Pool(processes, _start_worker, (loader, master_config)) as pool:
            results = pool.map(_compose_in_worker, jobs, chunksize=-(-len(jobs) // processes))
    else:
        results = [None] * len(jobs)
    kept = []
    for (overrides, wanted), result in zip(jobs, results):
        if result is None:
            result = loader.load_sweep_config(master_config, overrides)
        if wanted:
            kept.append(result)
    return kept


class ComposedConfigs:
    """Hydra's config loader, but ``load_sweep_config`` first hands out the configs kept for those
    overrides, each once (so a grid that repeats a job still runs two configs)."""

    def __init__(self, loader: Any):
        self.loader = loader
        self.kept: dict[tuple[str, ...], list[DictConfig]] = defaultdict(list)

    def keep(self, batch: Sequence[Sequence[str]], configs: list[DictConfig]) -> None:
        self.kept.clear()
        for overrides, config in zip(batch, configs):
            self.kept[tuple(overrides)].append(config)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        if configs := self.kept.get(tuple(sweep_overrides)):
            return configs.pop(0)
        return self.loader.load_sweep_config(master_config, sweep_overrides)

    def __getattr__(self, name: str) -> Any:  # the rest of Hydra's ConfigLoader interface
        return getattr(self.loader, name)


class ComposeOnceSweeper(BasicSweeper):
    """BasicSweeper (same ``max_batch_size`` and ``params``, same grid, same early failure), with
    each batch composed on every core and, under the in-process launcher, run from those configs."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.loader = hydra_context.config_loader
        self.composed = None
        if config.hydra.launcher.get("_target_") == IN_PROCESS_LAUNCHER:
            self.composed = ComposedConfigs(self.loader)
            hydra_context = HydraContext(config_loader=self.composed, callbacks=hydra_context.callbacks)
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        kept = compose_batch(self.loader, self.config, batch, MAX_KEPT if self.composed is not None else 0)
        if self.composed is not None:
            self.composed.keep(batch, kept)
