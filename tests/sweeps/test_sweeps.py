"""Sweeps: grid multiruns with the report callback, Optuna (in sqlite, resumed), the SLURM and local
submitit launchers. Composition tests are fast; the ones that run sweeps are `slow`."""

import csv
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class

from charfeat.config import register_configs
from charfeat.sweeps.callback import ReportCallback

FAST = ["trainer.epochs=1", "logger=none"]


def compose_with_hydra(*overrides: str):
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="charfeat.conf", version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def fast_overrides() -> list[str]:
    """FAST, plus no t-SNE/neighbour plots where the trainer has that switch (they dominate a 1-epoch job)."""
    return FAST + (["trainer.plots=false"] if "plots" in compose_with_hydra().trainer else [])


def run_train(args: list[str], cwd: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHARFEAT_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "charfeat.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def job_metric(job_dir: Path, name: str = "mean_average_precision_at_r") -> float:
    return json.loads((job_dir / "metrics.json").read_text())["trained"][name]


def test_every_multirun_ends_with_the_report_callback():
    cfg = compose_with_hydra()
    assert get_class(cfg.hydra.callbacks.report._target_) is ReportCallback


def test_optuna_search_maximises_the_returned_metric_over_existing_keys():
    cfg = compose_with_hydra("hparams_search=optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.mode.name == "MULTIRUN"
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "mean_average_precision_at_r"
    assert sweeper.storage is None and sweeper.study_name == "charfeat"
    assert sweeper.n_jobs == 1  # the basic launcher runs trials one by one anyway
    for key in sweeper.params:  # a misspelt key would only fail once the study has started
        node = cfg
        for part in key.split("."):
            assert part in node, f"hydra.sweeper.params names {key}, which the config lacks"
            node = node[part]


def test_slurm_launcher_has_its_resource_fields():
    cfg = compose_with_hydra("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.mem_gb=32")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.mem_gb) == ("gpu", 32)
    assert (launcher.gpus_per_node, launcher.cpus_per_task, launcher.timeout_min) == (1, 8, 240)
    assert launcher.array_parallelism == 8 and launcher.submitit_folder.endswith("/.submitit/%j")


def test_local_launcher_runs_jobs_through_submitit():
    cfg = compose_with_hydra("hydra/launcher=local", "hydra.sweeper.max_batch_size=2")
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert cfg.hydra.launcher.timeout_min == 60 and cfg.hydra.sweeper.max_batch_size == 2


@pytest.mark.slow
def test_grid_sweep_writes_a_report_of_every_job(cache_dir, tmp_path):
    result = run_train(["-m", "loss.margin=0.1,0.3", "head=mlp,linear", *fast_overrides(), "hydra.sweep.dir=sweep"],
                       tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert [(row["job"], row["loss.margin"], row["head"], row["status"]) for row in rows] == [
        ("0", "0.1", "mlp", "ok"), ("1", "0.1", "linear", "ok"), ("2", "0.3", "mlp", "ok"), ("3", "0.3", "linear", "ok")]
    for row in rows:  # the table holds each job's own metrics.json
        assert float(row["trained/mean_average_precision_at_r"]) == pytest.approx(
            job_metric(sweep / row["job"]), abs=1e-4)
    assert "Sweep results" in result.stdout and "(best)" in result.stdout  # printed by the callback
    assert (sweep / "report.md").is_file() and (sweep / "report.html").stat().st_size > 0
    assert {p.name for p in sweep.glob("*.svg")} == {"report_mean_average_precision_at_r_vs_loss.margin.svg",
                                                     "report_mean_average_precision_at_r_vs_head.svg"}
    svg = ET.parse(sweep / "report_mean_average_precision_at_r_vs_loss.margin.svg").getroot()
    (legend,) = [g for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("id") == "legend_1"]
    assert [t.text for t in legend.iter("{http://www.w3.org/2000/svg}text")] == ["head", "linear", "mlp"]


@pytest.mark.slow
def test_a_failed_job_is_listed_as_failed(cache_dir, tmp_path):
    # sampler.p=9 fails before the model is built (the sample set has 8 classes); Hydra then fails the
    # multirun after running every job, so the callback does not run: the CLI reports instead
    result = run_train(["-m", "sampler.p=8,9", *fast_overrides(), "hydra.sweep.dir=sweep"], tmp_path, cache_dir)
    assert result.returncode != 0
    report = subprocess.run([sys.executable, "-m", "charfeat.report", "sweep"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    rows = list(csv.DictReader((tmp_path / "sweep" / "report.csv").open()))
    assert [(row["sampler.p"], row["status"]) for row in rows] == [("8", "ok"), ("9", "failed")]
    assert rows[1]["error"] == "no metrics.json"


@pytest.mark.slow
def test_optuna_study_in_sqlite_runs_three_trials_and_resumes(cache_dir, tmp_path):
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = ["hparams_search=optuna", f"hydra.sweeper.storage={storage}", *fast_overrides()]

    result = run_train([*common, "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=1",
                        "hydra.sweep.dir=first"], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    first = tmp_path / "first"
    values = [job_metric(first / str(i)) for i in range(3)]
    best = yaml.safe_load((first / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(values))  # main returned the trained MAP@R
    assert set(best["best_params"]) == {"head", "loss.margin", "optim.lr"}
    assert (first / "report.csv").is_file()

    result = run_train([*common, "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=2",
                        "hydra.sweep.dir=second"], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="charfeat", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5
    values += [job_metric(tmp_path / "second" / str(i)) for i in range(2)]
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(values))
    assert study.best_value == pytest.approx(max(values))


@pytest.mark.slow
def test_submitit_local_launcher_runs_jobs_in_their_own_processes_one_batch_at_a_time(cache_dir, tmp_path):
    # two jobs, batches of one: the second job's process starts after the first one's has ended
    result = run_train(["-m", "hydra/launcher=local", "hydra.sweeper.max_batch_size=1", "loss.margin=0.25,0.3",
                        *fast_overrides(), "hydra.sweep.dir=sweep"], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    for job, margin in (("0", "0.25"), ("1", "0.3")):
        assert 0.0 <= job_metric(sweep / job) <= 1.0
        assert f"loss.margin={margin}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()
    logs = sorted(sweep.glob(".submitit/*/*_log.out"), key=lambda p: p.stat().st_mtime)
    assert len(logs) == 2  # each job ran under submitit, not in this process
    first_ended = logs[0].stat().st_mtime
    (submitted,) = logs[1].parent.glob("*_submitted.pkl")
    second_started = submitted.stat().st_mtime
    assert second_started >= first_ended - 1.0
    assert "Sweep results" in result.stdout
