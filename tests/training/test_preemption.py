"""A SLURM-style preemption through submitit's local executor: SIGUSR2 to the running job saves last.pt
after the current step, submitit requeues the job (same command line, same output dir), and the
requeued run resumes from its own last.pt, ending bit-identical to a run that was never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
RUN = ["logger=none", "trainer.epochs=40", "trainer.plots=false", "data.train_per_class=12", "data.val_per_class=6",
       "data.num_classes=4", "sampler.p=4", "head.dropout=0.3"]  # a 4-class sample set: its own dir


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def job_process(launcher: subprocess.Popen) -> int:
    """The submitit task running the Hydra job (python -m submitit.core._submit ...)."""
    for pid in descendants(launcher.pid):
        try:
            if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    raise AssertionError("no submitit task found")


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_preempted_submitit_job_resumes_from_its_own_checkpoint_bit_identically(cache_dir, tmp_path):
    env = {**os.environ, "CHARFEAT_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "charfeat.train"]
    reference = subprocess.run([*command, *RUN, "hydra.run.dir=reference"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]

    launcher = subprocess.Popen([*command, "-m", "hydra/launcher=local", *RUN, "hydra.sweep.dir=sweep"], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job = tmp_path / "sweep" / "0"
    wait_for(job / "checkpoints" / "best.pt", launcher)  # training is under way: epoch 1 has ended
    os.kill(job_process(launcher), signal.SIGUSR2)  # what SLURM sends before a time-out
    _, stderr = launcher.communicate(timeout=600)
    assert launcher.returncode == 0, stderr[-3000:]

    log = (job / "train.log").read_text()
    assert "interrupted by SIGUSR2" in log and "resuming from its own" in log
    interrupted_at = int(log.split("resumed from ")[1].split(", step ")[1].split()[0])
    assert 3 <= interrupted_at < 120  # after epoch 1's 3 steps, before the 40th epoch's end
    runs = [torch.load(run / "checkpoints" / "last.pt", weights_only=True) for run in (tmp_path / "reference", job)]
    assert runs[0]["loss_history"] == runs[1]["loss_history"]
    assert all(torch.equal(runs[0]["head"][key], runs[1]["head"][key]) for key in runs[0]["head"])
    metrics = [json.loads((run / "metrics.json").read_text())["trained"] for run in (tmp_path / "reference", job)]
    assert metrics[0] == metrics[1]
