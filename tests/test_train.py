"""The real entrypoint, run as a user runs it: `python -m charfeat.train`, from another directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from configured import load_without_charfeat

pytestmark = pytest.mark.slow


def run_train(args: list[str], cwd: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHARFEAT_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "charfeat.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def finished_wandb_run(run_dir: Path) -> bytes:
    """The one offline run's record log, after checking the run was finished (not left open)."""
    (run,) = run_dir.glob("wandb/offline-run-*")
    assert "finishing run" in (run / "logs" / "debug.log").read_text()
    (records,) = run.glob("run-*.wandb")
    return records.read_bytes()


def test_default_run_trains_evaluates_and_writes_everything(cache_dir, tmp_path):
    result = run_train(["sampler.p=8", "loss.margin=0.3", "hydra.run.dir=out"], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "out"

    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = ("trained", "untrained", "backbone", "chance")
    assert set(metrics) == {*rows, *(f"{row}_ci95" for row in rows)}
    for row in rows:
        scores, intervals = metrics[row], metrics[f"{row}_ci95"]
        assert 0.0 <= scores["precision_at_1"] <= 1.0 and 0.0 <= scores["mean_average_precision_at_r"] <= 1.0
        for name, (low, high) in intervals.items():
            assert low <= scores[name] <= high, (row, name)
    for name in ("precision_at_1", "mean_average_precision_at_r"):
        assert metrics["trained"][name] > metrics["untrained"][name], metrics
    # 8 classes of 10 val images: a random ranking of the other 79 finds one of the 9 same-class first
    assert metrics["chance"]["precision_at_1"] == pytest.approx(9 / 79, abs=1e-6)
    assert metrics["chance"]["recall_at_5"] > metrics["chance"]["precision_at_1"]
    for name in ("report.html", "suspects.jsonl", "per_query.npz", "plots/curves.png"):
        assert (run_dir / name).is_file(), name

    assert "precision_at_1" in result.stdout + result.stderr  # the metrics table
    assert "train: 100%" in result.stderr  # the progress bar ran to the end

    label_map = json.loads((run_dir / "label_mapping.json").read_text())
    assert list(label_map) == sorted(label_map) and list(label_map.values()) == list(range(8))

    checkpoint = load_without_charfeat(run_dir / "checkpoints" / "last.pt")  # its config: plain strings
    assert checkpoint["label_map"] == label_map
    assert checkpoint["config"]["backbone"]["pooling"] == "mean" and checkpoint["config"]["logger"]["mode"] == "offline"
    assert checkpoint["config"]["loss"]["margin"] == 0.3 and checkpoint["config"]["sampler"]["p"] == 8
    assert checkpoint["backbone_trainable"] == {}  # frozen backbone: never saved
    assert (run_dir / "checkpoints" / "last.pt").stat().st_size < 2_000_000

    records = finished_wandb_run(run_dir)
    for key in (b"trained/precision_at_1", b"train/loss", b"val/mean_average_precision_at_r", b"margin",
                b"backbone/precision_at_1", b"trained/precision_at_1_ci95_low", b"chance/recall_at_5_ci95_high"):
        assert key in records


def test_logger_none_writes_no_wandb_files(cache_dir, tmp_path):
    result = run_train(["logger=none", "trainer.epochs=1", "hydra.run.dir=out"], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "metrics.json").is_file()
    assert not list(tmp_path.rglob("wandb"))


def test_multirun_gives_each_job_its_own_dir_and_wandb_run(cache_dir, tmp_path):
    result = run_train(["-m", "loss.margin=0.1,0.3", "trainer.epochs=2", "hydra.sweep.dir=sweep"], tmp_path,
                       cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    margins = {}
    for job in ("0", "1"):
        job_dir = tmp_path / "sweep" / job
        assert (job_dir / "metrics.json").is_file()
        config = torch.load(job_dir / "checkpoints" / "last.pt", weights_only=False)["config"]
        margins[job] = config["loss"]["margin"]
        assert b"trained/precision_at_1" in finished_wandb_run(job_dir)
    assert sorted(margins.values()) == [0.1, 0.3]


def test_impossible_sampler_fails_before_the_model_is_built(cache_dir, tmp_path):
    result = run_train(["sampler.p=9", "logger=none", "hydra.run.dir=out"], tmp_path, cache_dir)
    assert result.returncode != 0
    assert "sampler.p=9 but only 8 class(es) have at least 2 training images" in result.stderr
    assert "backbone:" not in result.stdout + result.stderr
