"""The default sweeper (hydra_plugins/charfeat_sweeper): Hydra's basic grid, each job composed once.

A tiny Hydra app in a subprocess (no torch: a second each) counts its compositions (in every
process: bigger batches are composed in forked ones), with Hydra's basic sweeper and charfeat's."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sweeps.test_sweeps import compose_with_hydra

SWEEPER = "hydra_plugins.charfeat_sweeper.compose_once.ComposeOnceSweeper"
BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"

APP = '''
import os
import hydra
from hydra.core.hydra_config import HydraConfig
from hydra._internal.config_loader_impl import ConfigLoaderImpl

load = ConfigLoaderImpl.load_configuration
def counting(self, *args, **kwargs):
    with open("compositions", "a") as log:
        log.write(f"{os.getpid()}\\n")
    return load(self, *args, **kwargs)
ConfigLoaderImpl.load_configuration = counting

@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    job = HydraConfig.get().job
    print("job", job.num, job.id, cfg.x, cfg.db.name, flush=True)

main()
'''


def run_app(tmp_path: Path, sweeper: str, *overrides: str) -> subprocess.CompletedProcess:
    (tmp_path / "compositions").unlink(missing_ok=True)
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "config.yaml").write_text("defaults:\n  - db: a\n  - _self_\nx: 0\n")
    (tmp_path / "db").mkdir(exist_ok=True)
    for name in ("a", "b"):
        (tmp_path / "db" / f"{name}.yaml").write_text(f"name: {name}\n")
    return subprocess.run([sys.executable, "app.py", "-m", f"hydra.sweeper._target_={sweeper}", "hydra.sweep.dir=sweep",
                           *overrides], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def jobs(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("job ")]


def composers(tmp_path: Path) -> list[int]:
    """The process id of each composition of the last run_app, in order."""
    return [int(pid) for pid in (tmp_path / "compositions").read_text().split()]


def start_up(tmp_path: Path) -> int:
    """The compositions a multirun makes before and besides its jobs' (Hydra's master config)."""
    run_app(tmp_path, BASIC, "x=1")
    return len(composers(tmp_path)) - 2


def test_each_job_is_composed_once_and_runs_its_own_config(tmp_path):
    """4 compositions for 4 jobs (Hydra's basic sweeper: 8); a job repeated in the grid still
    gets a config of its own (job numbers and ids differ)."""
    grid = ["x=1,2", "db=a,b"]
    base = start_up(tmp_path)
    expected = ["job 0 0 1 a", "job 1 1 1 b", "job 2 2 2 a", "job 3 3 2 b"]
    basic = run_app(tmp_path, BASIC, *grid)
    assert basic.returncode == 0 and jobs(basic) == expected and len(composers(tmp_path)) == base + 2 * 4
    ours = run_app(tmp_path, SWEEPER, *grid)
    assert ours.returncode == 0 and jobs(ours) == expected and len(composers(tmp_path)) == base + 4, ours.stderr
    twice = run_app(tmp_path, SWEEPER, "x=7,7")
    assert jobs(twice) == ["job 0 0 7 a", "job 1 1 7 a"] and len(composers(tmp_path)) == base + 2


def test_a_job_that_cannot_be_composed_fails_the_sweep_before_any_job_runs(tmp_path):
    result = run_app(tmp_path, SWEEPER, "db=a,nope")
    assert result.returncode != 0 and jobs(result) == []
    assert "nope" in result.stderr


def test_every_batch_is_composed_once(tmp_path):
    """hydra.sweeper.max_batch_size splits the grid into batches, each composed when its turn comes."""
    result = run_app(tmp_path, SWEEPER, "x=1,2,3", "hydra.sweeper.max_batch_size=2")
    assert jobs(result) == ["job 0 0 1 a", "job 1 1 2 a", "job 2 2 3 a"]
    composed = len(composers(tmp_path))
    assert composed == start_up(tmp_path) + 3


def test_a_big_batch_is_composed_on_every_core_and_still_fails_before_any_job(tmp_path):
    """9 jobs: 3 per core at least, so on 2 cores or more two forked processes compose them."""
    base = start_up(tmp_path)
    result = run_app(tmp_path, SWEEPER, "x=1,2,3", "db=a,b,a")
    assert result.returncode == 0, result.stderr
    assert jobs(result) == [f"job {i} {i} {x} {db}" for i, (x, db) in enumerate((x, db) for x in "123" for db in "aba")]
    pids = composers(tmp_path)
    assert len(pids) == base + 9  # the master config in the sweeper, then each job once, somewhere
    if len(os.sched_getaffinity(0)) >= 2:
        assert len(set(pids[base:])) == 2 and pids[0] not in pids[base:]

    failing = run_app(tmp_path, SWEEPER, "x=1,2,3", "db=a,b,nope")
    assert failing.returncode != 0 and jobs(failing) == [] and "nope" in failing.stderr


def test_preloaded_modules_are_imported_here_while_another_process_composes(tmp_path):
    """hydra.sweeper.preload: imported once, in the sweeper's process, before any job; the jobs are
    composed meanwhile in forked processes, leaving this one a core (2 cores: one forked process)."""
    (tmp_path / "heavy.py").write_text("import os\nopen('preloaded', 'a').write(f'{os.getpid()}\\n')\n")
    base = start_up(tmp_path)
    result = run_app(tmp_path, SWEEPER, "hydra/sweeper=compose_once", "hydra.sweeper.preload=[heavy]", "x=1,2,3")
    assert result.returncode == 0, result.stderr
    assert jobs(result) == ["job 0 0 1 a", "job 1 1 2 a", "job 2 2 3 a"]
    pids = composers(tmp_path)
    assert (tmp_path / "preloaded").read_text().split() == [str(pids[0])]  # the sweeper's process, once
    if len(os.sched_getaffinity(0)) >= 2:
        assert len(pids) == base + 3 and len(set(pids[base:])) == 1 and pids[0] not in pids[base:]

    missing = run_app(tmp_path, SWEEPER, "hydra/sweeper=compose_once", "hydra.sweeper.preload=[no_such_module]",
                      "x=1,2,3")
    assert missing.returncode != 0 and jobs(missing) == []
    assert "hydra.sweeper.preload: cannot import 'no_such_module'" in missing.stderr


def test_train_sweeps_preload_torch():
    assert "torch" in compose_with_hydra().hydra.sweeper.preload


def test_a_batch_over_the_kept_limit_composes_the_rest_again():
    from hydra_plugins.charfeat_sweeper.compose_once import ComposedConfigs, compose_batch

    class Loader:
        calls = 0

        def load_sweep_config(self, master, overrides):
            self.calls += 1
            return {"overrides": overrides, "call": self.calls}

    loader, batch = Loader(), [["x=1"], ["x=1"], ["x=2"]]
    kept = compose_batch(loader, "master", batch, keep=2)
    assert loader.calls == 3 and [config["call"] for config in kept] == [1, 2]  # every job checked up front
    configs = ComposedConfigs(loader)
    configs.keep(batch, kept)
    assert [configs.load_sweep_config("master", job)["call"] for job in batch] == [1, 2, 4]
    assert loader.calls == 4  # only the job past the limit composed again


def test_train_sweeps_with_it_unless_optuna_searches():
    assert compose_with_hydra().hydra.sweeper._target_ == SWEEPER
    assert compose_with_hydra("hydra.sweeper.max_batch_size=2").hydra.sweeper.max_batch_size == 2
    assert compose_with_hydra("hparams_search=optuna").hydra.sweeper._target_.endswith("OptunaSweeper")


@pytest.mark.parametrize("launcher", ["hydra/launcher=local", "hydra/launcher=slurm"])
def test_launchers_that_compose_in_their_own_processes_keep_nothing(launcher):
    """submitit pickles the launcher for each job: it gets Hydra's own config loader, not one holding configs."""
    from hydra_plugins.charfeat_sweeper.compose_once import IN_PROCESS_LAUNCHER

    assert compose_with_hydra().hydra.launcher._target_ == IN_PROCESS_LAUNCHER
    assert compose_with_hydra(launcher).hydra.launcher._target_ != IN_PROCESS_LAUNCHER
