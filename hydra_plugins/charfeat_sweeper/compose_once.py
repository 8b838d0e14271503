"""Hydra's basic grid sweeper, with each job's config composed once instead of twice, on every core.

The basic sweeper composes every job of a batch up front, so that a bad override fails before
any job runs; then Hydra's in-process launcher composes each job again to run it. Composing the
train config takes about 0.1 s of pure Python, which made these compositions the largest cost a
sweep adds to its jobs' own work once their features are cached (experiments/sweep_cost). Here
the up-front compositions are split across forked processes, one per core, and the in-process
launcher is handed them instead of composing again. A launcher that runs jobs in other
processes (submitit, joblib) composes there anyway: with one, nothing is kept.

While other processes compose, this one is idle; under the in-process launcher it imports the
``preload`` modules meanwhile (the libraries every job imports first: torch alone is about a
second), leaving one core to it and composing on the others.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, List

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

IN_PROCESS_LAUNCHER = f"{BasicLauncher.__module__}.{BasicLauncher.__name__}"
MAX_KEPT = 100  # composed configs held at once (about 0.35 MB each); later jobs of a bigger batch compose again
JOBS_PER_PROCESS = 3  # fewer jobs than this per core are composed here: a fork costs about what a job does


@dataclass
class ComposeOnceSweeperConf(BasicSweeperConf):
    """The schema of conf/hydra/sweeper/charfeat.yaml: BasicSweeper's keys, plus ``preload``."""

    _target_: str = "hydra_plugins.charfeat_sweeper.compose_once.ComposeOnceSweeper"
    preload: List[str] = field(default_factory=list)


ConfigStore.instance().store(group="hydra/sweeper", name="compose_once", node=ComposeOnceSweeperConf,
                             provider="charfeat")

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


def compose_batch(loader: Any, master_config: DictConfig, batch: Sequence[Sequence[str]], keep: int,
                  preload: Sequence[str] = ()) -> list:
    """Compose every job of ``batch`` in order, raising Hydra's error for the first that cannot be;
    return the configs of the first ``keep`` jobs. More than a few jobs per core go to forked
    processes (not from a process with threads running: a fork copies their locks, not the threads);
    this process imports the ``preload`` modules while they compose, on a core of its own (or first,
    when it composes them all itself)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    processes = min(cores - 1 if preload else cores, len(batch) // JOBS_PER_PROCESS)
    jobs = [(list(overrides), i < keep) for i, overrides in enumerate(batch)]
    # one forked process is worth it only when this one has something else to do meanwhile
    if processes >= (1 if preload else 2) and threading.active_count() == 1 \
            and "fork" in multiprocessing.get_all_start_methods():
        sys.stdout.flush()  # a fork that exits on its own would write what these buffers hold again
        sys.stderr.flush()
        with multiprocessing.get_context("fork").Pool(processes, _start_worker, (loader, master_config)) as pool:
            composing = pool.map_async(_compose_in_worker, jobs, chunksize=-(-len(jobs) // processes))
            import_modules(preload)
            results = composing.get()
    else:
        import_modules(preload)
        results = [None] * len(jobs)
    kept = []
    for (overrides, wanted), result in zip(jobs, results):
        if result is None:
            result = loader.load_sweep_config(master_config, overrides)
        if wanted:
            kept.append(result)
    return kept


def import_modules(names: Sequence[str]) -> None:
    """Import ``hydra.sweeper.preload``'s modules, naming the key when one cannot be."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise HydraException(f"hydra.sweeper.preload: cannot import {name!r}: {err}") from err


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
    each batch composed on every core and, under the in-process launcher, run from those configs
    and composed while this process imports ``preload``."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
                 preload: Sequence[str] = ()):
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.preload = list(preload)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.loader = hydra_context.config_loader
        self.composed = None
        if config.hydra.launcher.get("_target_") == IN_PROCESS_LAUNCHER:
            self.composed = ComposedConfigs(self.loader)
            hydra_context = HydraContext(config_loader=self.composed, callbacks=hydra_context.callbacks)
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        in_process = self.composed is not None
        kept = compose_batch(self.loader, self.config, batch, MAX_KEPT if in_process else 0,
                             preload=self.preload if in_process else ())
        if in_process:
            self.composed.keep(batch, kept)
