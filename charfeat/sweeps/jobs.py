"""The jobs of a multirun, read back from its sweep dir: each job's overrides, metrics and plots.

Every dir under the sweep dir that holds ``.hydra/overrides.yaml`` is one job (whatever
``hydra.sweep.subdir`` made of them; submitit's own ``.submitit`` dirs are not jobs). A job
without a readable ``metrics.json`` is failed, never dropped.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_METRIC = "mean_average_precision_at_r"


@dataclass
class Job:
    name: str
    dir: Path
    overrides: dict[str, str]
    raw_overrides: list[str]
    metrics: dict[str, dict[str, float]] | None
    error: str | None = None
    plots: list[Path] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "ok" if self.metrics is not None else "failed"

    def scores(self, model: str = "trained") -> dict[str, float]:
        """The model's scalar metrics (metrics.json may hold more, e.g. per-class dicts)."""
        scores = (self.metrics or {}).get(model)
        if not isinstance(scores, dict):
            return {}
        return {k: float(v) for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def value(self, metric: str, model: str = "trained") -> float | None:
        return self.scores(model).get(metric)

    def interval(self, metric: str, model: str = "trained") -> tuple[float, float] | None:
        """The metric's 95 % bootstrap interval (metrics.json's ``<model>_ci95``), if the job wrote one."""
        bounds = ((self.metrics or {}).get(f"{model}_ci95") or {}).get(metric)
        if not isinstance(bounds, list) or len(bounds) != 2:
            return None
        return float(bounds[0]), float(bounds[1])


def natural_key(text: str) -> list:
    """Sort key that puts "2" before "10"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def as_float(text: str) -> float | None:
    """The override's value as a finite number, or None when it is not one."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """Hydra's override strings (``key=value``, ``+key=value``, ``~key``) -> {key: value}."""
    out = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        out[key] = value if sep else ""
    return out


def _read_overrides(path: Path) -> list[str]:
    """overrides.yaml: the YAML list of the job's override strings."""
    import yaml  # PyYAML comes with omegaconf

    items = yaml.safe_load(path.read_text()) or []
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a list of overrides, got {type(items).__name__}")
    return [str(item) for item in items]


def load_job(job_dir: Path, sweep_dir: Path) -> Job:
    raw = _read_overrides(job_dir / ".hydra" / "overrides.yaml")
    metrics, error = None, None
    metrics_path = job_dir / "metrics.json"
    if not metrics_path.is_file():
        error = "no metrics.json"
    else:
        try:
            metrics = json.loads(metrics_path.read_text())
        except (OSError, ValueError) as exc:
            error = f"unreadable metrics.json: {exc}"
        if metrics is not None and not isinstance(metrics, dict):
            metrics, error = None, "metrics.json is not an object"
    plots = sorted((job_dir / "plots").glob("*.png"), key=lambda p: natural_key(p.name))
    return Job(name=job_dir.relative_to(sweep_dir).as_posix(), dir=job_dir, overrides=parse_overrides(raw),
               raw_overrides=raw, metrics=metrics, error=error, plots=plots)


def collect_jobs(sweep_dir: Path) -> list[Job]:
    """Every job dir under ``sweep_dir``, in job order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no such sweep dir: {sweep_dir}")
    job_dirs = [p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")
                if ".submitit" not in p.relative_to(sweep_dir).parts]
    job_dirs = sorted(set(job_dirs), key=lambda d: natural_key(d.relative_to(sweep_dir).as_posix()))
    return [load_job(d, sweep_dir) for d in job_dirs]


def models_and_metrics(jobs: list[Job]) -> tuple[list[str], list[str]]:
    """Model names ("trained", "untrained", "chance") and scalar metric names, as metrics.json holds them."""
    models: dict[str, None] = {}
    metrics: dict[str, None] = {}
    for job in jobs:
        for model in job.metrics or {}:
            scores = job.scores(model)
            if scores:
                models[model] = None
                metrics.update(dict.fromkeys(scores))
    return list(models), list(metrics)


def override_keys(jobs: list[Job]) -> list[str]:
    keys: dict[str, None] = {}
    for job in jobs:
        keys.update(dict.fromkeys(job.overrides))
    return list(keys)


def swept_keys(jobs: list[Job]) -> list[str]:
    """Keys whose value differs between jobs (all keys when there is a single job)."""
    keys = override_keys(jobs)
    if len(jobs) < 2:
        return keys
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def common_overrides(jobs: list[Job]) -> list[str]:
    """The override strings every job shares (none for a single job: all of its keys count as swept)."""
    if len(jobs) < 2:
        return []
    swept = set(swept_keys(jobs))
    return [line for line in jobs[0].raw_overrides if line.partition("=")[0] not in swept]


def best_job(jobs: list[Job], metric: str) -> Job | None:
    scored = [job for job in jobs if job.value(metric) is not None]
    return max(scored, key=lambda job: job.value(metric)) if scored else None
