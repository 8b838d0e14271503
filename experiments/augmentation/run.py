"""What training-image augmentation does to the val metrics on the sample set, frozen and LoRA (issue 13 §2).

    python experiments/augmentation/run.py [--epochs 10] [--lora-epochs 3] [--seeds 0,1,2]
                                           [--lora-seeds 0,1,2] [--out /tmp/aug-runs/grid]

Runs `python -m charfeat.train` as one subprocess per job, for the grid

    frozen backbone (backbone.train=frozen): augment=none, light views=1, light views=4, strong views=4
    LoRA backbone   (backbone.train=lora):   augment=none, light, strong

over each seed (trainer.seed), with logger=none and trainer.plots=false, each into OUT/<config>-s<seed>/.
Its terminal output goes to OUT/<config>-s<seed>.out; one JSON line per finished job (wall time, exit
status, metrics) is appended to OUT/runs.jsonl, and a job whose metrics.json already exists is not run
again (its recorded wall time is reused), so an interrupted grid resumes.

Then prints, per configuration: the mean over seeds of the "trained" row's val MAP@R, P@1 and
R-precision with the spread (min-max over seeds), the mean half-width of the trained MAP@R's 95 %
bootstrap interval (over the 80 val queries, from metrics.json), the mean best epoch, and wall
seconds per run; then the "untrained", "backbone" and "chance" rows once per backbone mode, for
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


def run_job(out: Path, name: str, mode: str, overrides: list[str], epochs: int, seed: int, records: dict) -> dict:
    key = f"{name}-s{seed}"
    run_dir = out / key
    if (run_dir / "metrics.json").exists() and key in records:
        print(f"[skip] {key}: {run_dir}/metrics.json exists", flush=True)
        return records[key]
    cmd = [sys.executable, "-m", "charfeat.train", "logger=none", "trainer.plots=false", *overrides,
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


def table(results: dict[str, list[dict]]) -> str:
    lines = []
    head = f"{'config':<18}{'n':>2} {'epochs':>6}  " + "".join(f"{label + ' mean (min-max)':<24}" for _, label in METRICS)
    head += f"{'MAP@R ±CI':>10}{'best ep':>8}{'s/run':>7}"
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
        if len(ok) < len(records):
            row += f"  ({len(records) - len(ok)} failed)"
        lines.append(row)
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
        results[name] = [run_job(args.out, name, mode, overrides, epochs, s, records) for s in job_seeds]
    print(f"\ngrid: {time.monotonic() - start:.0f} s wall; uptime: "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}\n")
    text = table(results)
    print(text)
    (args.out / "table.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
