"""One short training run shared by the checkpoint, plots and CLI tests, and a runner for the entrypoints.

The run (1 epoch, no logger, plots on) is made once per test session inside the session's cache
dir, so every test module that needs a trained checkpoint reuses it.
"""

import os
import subprocess
import sys
from pathlib import Path


def run_module(module: str, args: list[str], cwd: Path, cache_dir: Path,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` as a user runs it, with the session's cache dir (and ``env`` on top)."""
    env = {**os.environ, "CHARFEAT_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
           **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def trained_run(cache_dir: Path) -> Path:
    """The output dir of ``python -m charfeat.train logger=none trainer.epochs=1``, trained on first use."""
    run_dir = Path(cache_dir) / "runs" / "epoch1"
    if not (run_dir / "metrics.json").is_file():
        result = run_module("charfeat.train", ["logger=none", "trainer.epochs=1", f"hydra.run.dir={run_dir}"],
                            Path(cache_dir), Path(cache_dir))
        assert result.returncode == 0, result.stderr[-3000:]
    return run_dir
