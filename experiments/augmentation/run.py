"""What training-image augmentation does to the val metrics on the sample set, frozen and LoRA (issue 13 §2).

    python experiments/augmentation/run.py [--epochs 10] [--lora-epochs 3] [--seeds 0,1,2]
                                           [--lora-seeds 0,1,2] [--only CONFIG,...] [--extra 'k=v ...']
                                           [--out /tmp/aug-runs/grid]

Runs `python -m charfeat.train` as one subprocess per job, for the grid

    frozen backbone (backbone.train=frozen): augment=none, light views=1, light views=4, strong views=4
    LoRA backbone   (backbone.train=lora):   augment=none, light, strong

over each seed (trainer.seed), with logger=none and trainer.plots=false, each into OUT/<config>-s<seed>/.
Its terminal output goes to OUT/<config>-s<seed>.out; one JSON line per finished job (wall time, exit
status, metrics) is appended to OUT/runs.jsonl, and a job whose metrics.json already exists is not run
again (its recorded wall time is reused), so an interrupted grid resumes.

Then prints, per configuration: the mean over seeds of the "trained" row's val MAP@R, P@1 and
R-precision with the spread (min-max over seeds), the mean half-width of the trained MAP@R's 95 %
bootstrap interval (over the 80 val queries, from metrics.json), the mean best epoch, wall
seconds per run, and the paired difference in MAP@R from the same mode's augment=none runs (per val
query and seed, from per_query.npz) with its 95 % bootstrap interval over the queries; then the "untrained", "backbone" and "chance" rows once per backbone mode, for
reference. The feature cache is whatever CHARFEAT_CACHE_DIR names (the first seed of a frozen
configuration pays for extracting its views; later seeds read them from the cache).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean

import numpy as np

METRICS = [("mean_average_precision_at_r", "MAP@R"), ("precision_at_1", "P@1"), ("r_precision", "R-prec")]

# name -> (backbone mode, overrides)
CONFIGS = {
    "frozen-none": ("frozen", ["augment=none"]),
    "frozen-light-v1": ("frozen", ["augment=light", "augment.views=1"]),
    "frozen-light-v4": ("frozen", ["augment=light", "augment.views=4"]),
    "frozen-strong-v4": ("frozen", ["augment=strong", "augment.views=4"]),
    "lora-none": ("lora", ["backbone.train=lora", "augment=none"]),
    "lora-light": ("lora", ["backbone.train=lora", "augment=light"]),
    "lora-strong": ("lora", ["backbone.train=lora", "augment=strong"]),
}


def seeds(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def run_job(out: Path, name: str, mode: str, overrides: list[str], epochs: int, seed: int, records: dict,
            extra: list[str]) -> dict:
    key = f"{name}-s{seed}"
    run_dir = out / key
    if (run_dir / "metrics.json").exists() and key in records:
        print(f"[skip] {key}: {run_dir}/metrics.json exists", flush=True)
        return records[key]
    cmd = [sys.executable, "-m", "charfeat.train", "logger=none", "trainer.plots=false", *overrides, *extra,
           f"trainer.epochs={epochs}", f"trainer.seed={seed}", f"hydra.run.dir={run_dir}"]
    print(f"[run]  {key}: {' '.join(cmd[1:])}", flush=True)
    start = time.monotonic()
    with open(out / f"{key}.out", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"})
    wall = time.monotonic() - start
    record = {"key": key, "config": name, "mode": mode, "seed": seed, "epochs": epochs, "cmd": cmd[1:],
              "returncode": proc.returncode, "wall_s": round(wall, 1)}
    if proc.returncode == 0 and (run_dir / "metrics.json").exists():
        record["metrics"] = json.loads((run_dir / "metrics.json").read_text())
    else:
        record["error"] = (out / f"{key}.out").read_text()[-3000:]
        print(f"[FAIL] {key}: exit {proc.returncode}; last lines:\n{record['error'][-800:]}", flush=True)
    print(f"       {key}: {wall:.0f} s", flush=True)
    with open(out / "runs.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def spread(values: list[float]) -> str:
    return f"{mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def paired(out: Path, name: str, records: list[dict], metric: str = "mean_average_precision_at_r",
           resamples: int = 2000) -> tuple[float, float, float] | None:
    """The trained row's ``metric`` minus that of the same mode's ``none`` configuration, paired by seed
    and by val query (OUT/<config>-s<seed>/per_query.npz): the mean difference over the seeds both ran
    and its 95 % bootstrap interval over the val queries; None for a ``none`` configuration."""
    base = f"{records[0]['mode']}-none"
    if name == base:
        return None
    diffs = []
    for r in records:
        a, b = out / f"{name}-s{r['seed']}" / "per_query.npz", out / f"{base}-s{r['seed']}" / "per_query.npz"
        if "metrics" not in r or not a.exists() or not b.exists():
            continue
        za, zb = np.load(a), np.load(b)
        assert list(za["id"]) == list(zb["id"]), "val queries differ between runs"
        diffs.append(za[f"trained/{metric}"] - zb[f"trained/{metric}"])
    if not diffs:
        return None
    per_query = np.mean(diffs, axis=0)  # each query's difference, averaged over seeds
    rng = np.random.default_rng(0)
    boot = per_query[rng.integers(len(per_query), size=(resamples, len(per_query)))].mean(axis=1)
    return float(per_query.mean()), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def table(out: Path, results: dict[str, list[dict]]) -> str:
    lines = []
    head = f"{'config':<18}{'n':>2} {'epochs':>6}  " + "".join(f"{label + ' mean (min-max)':<24}" for _, label in METRICS)
    head += f"{'MAP@R ±CI':>10}{'best ep':>8}{'s/run':>7}   MAP@R - none, paired [95% CI]"
    lines.append(head)
    for name, records in results.items():
        ok = [r for r in records if "metrics" in r]
        if not ok:
            lines.append(f"{name:<18} all {len(records)} run(s) failed")
            continue
        row = f"{name:<18}{len(ok):>2} {ok[0]['epochs']:>6}  "
        for metric, _ in METRICS:
            row += f"{spread([r['metrics']['trained'][metric] for r in ok]):<24}"
        cis = [r["metrics"].get("trained_ci95", {}).get("mean_average_precision_at_r") for r in ok]
        half = mean((hi - lo) / 2 for lo, hi in cis) if all(cis) else float("nan")
        best = mean(r["metrics"]["trained"].get("checkpoint", {}).get("epoch", float("nan")) for r in ok)
        row += f"{'±%.3f' % half:>10}{best:>8.1f}{mean(r['wall_s'] for r in records):>7.0f}"
        diff = paired(out, name, records)
        row += "   -" if diff is None else f"   {diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}]"
        if len(ok) < len(records):
            row += f"  ({len(records) - len(ok)} failed)"
        lines.append(row)
    lines.append("")
    lines.append("MAP@R ±CI: mean half-width of the trained MAP@R's 95 % bootstrap interval (metrics.json); best ep: the")
    lines.append("epoch picked by val MAP@R (mean over seeds); s/run: wall seconds per run, the first seed's extraction included;")
    lines.append("MAP@R - none: per val query, minus the same mode's augment=none run of the same seed, averaged over seeds,")
    lines.append("with a 95 % bootstrap interval over the 80 val queries (seed-to-seed variation not included).")
    lines.append("")
    lines.append("reference rows (no training; mean (min-max) over all runs of the mode):")
    for mode in ("frozen", "lora"):
        ok = [r for recs in results.values() for r in recs if r["mode"] == mode and "metrics" in r]
        if not ok:
            continue
        for row_name in ("untrained", "backbone", "chance"):
            row = f"  {mode + ' ' + row_name:<19}     "
            for metric, _ in METRICS:
                row += f"{spread([r['metrics'][row_name][metric] for r in ok]):<24}"
            lines.append(row)
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="trainer.epochs of the frozen runs")
    parser.add_argument("--lora-epochs", type=int, default=3, help="trainer.epochs of the LoRA runs")
    parser.add_argument("--seeds", type=seeds, default=[0, 1, 2], help="trainer.seed values, comma-separated")
    parser.add_argument("--lora-seeds", type=seeds, default=None, help="seeds of the LoRA runs (default: --seeds)")
    parser.add_argument("--only", default=None, help="comma-separated config names (default: all)")
    parser.add_argument("--extra", default="", help="overrides added to every job, space-separated "
                        "(e.g. 'data=local data.root=/path'); use a new --out for each")
    parser.add_argument("--out", type=Path, default=Path("/tmp/aug-runs/grid"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    records = {}
    if (args.out / "runs.jsonl").exists():
        for line in (args.out / "runs.jsonl").read_text().splitlines():
            record = json.loads(line)
            records[record["key"]] = record
    names = args.only.split(",") if args.only else list(CONFIGS)
    results: dict[str, list[dict]] = {}
    start = time.monotonic()
    print(f"CHARFEAT_CACHE_DIR={os.environ.get('CHARFEAT_CACHE_DIR', '(unset)')}  uptime: "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}", flush=True)
    for name in names:
        mode, overrides = CONFIGS[name]
        epochs = args.lora_epochs if mode == "lora" else args.epochs
        job_seeds = (args.lora_seeds or args.seeds) if mode == "lora" else args.seeds
        results[name] = [run_job(args.out, name, mode, overrides, epochs, s, records, args.extra.split())
                         for s in job_seeds]
    jobs = sum(r["wall_s"] for recs in results.values() for r in recs)
    print(f"\ngrid: {time.monotonic() - start:.0f} s wall this call, {jobs:.0f} s in jobs (reused ones included); uptime: "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}\n")
    text = table(args.out, results)
    print(text)
    (args.out / "table.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
