"""Wall time of an N-job sweep relative to one run, with the feature cache off and on.

    .venv/bin/python experiments/sweep_cost/bench.py --jobs 4
    .venv/bin/python experiments/sweep_cost/bench.py --jobs 4 --launcher local   # a process per job
    .venv/bin/python experiments/sweep_cost/bench.py --jobs 4 --cache off -- backbone=qwen3_vl_2b data=local data.root=...
    .venv/bin/python experiments/sweep_cost/bench.py --sweep head=mlp,linear loss.margin=0.1,0.2,0.3,0.4 --cache on -- backbone=small

Every measurement is `python -m charfeat.train` in a subprocess, timed from start to exit (so
imports count, once per process). A sweep is `-m loss.margin=<N values>`, or the grid given with
`--sweep`; the jobs differ only in the head and its loss, so a frozen backbone's features are the
same for all of them. The cache switch is
the override `backbone.feature_cache`: `null` (off) or a fresh, empty directory per measurement
(on: the first job of a sweep fills it, the others read it). A one-off warm-up builds the tiny model
and the sample set first, untimed. Arguments after `--` go to every run. Each cell is timed
--repeats times, interleaved, and the minimum kept (wall time, and CPU time of the process tree,
which other load on the machine disturbs less). Prints the ratios of this one invocation.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `python -m charfeat.train` and every process it started."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "charfeat.train", *args], cwd=cwd, env=env,
                            capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"failed: charfeat.train {' '.join(args)}\n{result.stderr[-3000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def has_trainer_plots() -> bool:
    from hydra import compose, initialize_config_module

    from charfeat.config import register_configs

    register_configs()
    with initialize_config_module(config_module="charfeat.conf", version_base="1.3"):
        return "plots" in compose("train").trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4, help="jobs in the sweep (N margins)")
    parser.add_argument("--sweep", nargs="+", help="the sweep's overrides instead, e.g. head=mlp,linear loss.margin=0.1,0.2")
    parser.add_argument("--cache", choices=["off", "on", "both"], default="both")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="each measurement's minimum over this many runs")
    parser.add_argument("--launcher", default=None, help="e.g. local: hydra/launcher=local (a process per job)")
    parser.add_argument("--parallel", type=int, default=1, help="with --launcher: jobs at once (max_batch_size)")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run (after --)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="charfeat-sweep-cost-"))
    env = {**os.environ, "CHARFEAT_CACHE_DIR": str(work / "cache"), "HF_HUB_OFFLINE": "1",
           "WANDB_MODE": "disabled"}
    common = [f"trainer.epochs={args.epochs}", "logger=none", *args.overrides]
    if has_trainer_plots():
        common.append("trainer.plots=false")  # t-SNE/neighbour PNGs are per-job work a cache cannot save
    margins = ",".join(f"{0.1 + 0.4 * i / max(args.jobs - 1, 1):.3f}" for i in range(args.jobs))
    grid = args.sweep or [f"loss.margin={margins}"]
    jobs = 1
    for override in grid:
        jobs *= len(override.split("=", 1)[1].split(","))
    launcher = ([f"hydra/launcher={args.launcher}", f"hydra.sweeper.max_batch_size={args.parallel}"]
                if args.launcher else [])

    print(f"warm-up (untimed): tiny model and sample set into {work / 'cache'}", flush=True)
    run([*common, "backbone.feature_cache=null", f"hydra.run.dir={work / 'warmup'}"], work, env)

    modes = ["off", "on"] if args.cache == "both" else [args.cache]
    times = {(mode, kind): [] for mode in modes for kind in ("one run", "sweep")}
    for repeat in range(args.repeats):  # interleaved, so a burst of load elsewhere hits every cell alike
        for mode in modes:
            for kind in ("one run", "sweep"):
                label = f"{kind.replace(' ', '-')}-{mode}-{repeat}"
                cache = "backbone.feature_cache=" + ("null" if mode == "off" else str(work / f"features-{label}"))
                if kind == "one run":
                    cmd = [*common, cache, f"hydra.run.dir={work / label}"]
                else:
                    cmd = ["-m", *launcher, *grid, *common, cache, f"hydra.sweep.dir={work / label}"]
                times[(mode, kind)].append(run(cmd, work, env))
                wall, cpu = times[(mode, kind)][-1]
                print(f"  repeat {repeat}: cache {mode:<3} {kind:<7} wall {wall:6.1f} s  cpu {cpu:6.1f} s", flush=True)

    best = {key: (min(w for w, _ in runs), min(c for _, c in runs)) for key, runs in times.items()}
    print(f"\n{jobs} jobs ({' '.join(grid)}), epochs={args.epochs}, minimum of {args.repeats} runs each; overrides: "
          f"{' '.join(common)}; " + (' '.join(launcher) if args.launcher else "basic launcher (jobs in one process)"))
    print(f"{'cache':<6}{'one run wall':>14}{'sweep wall':>12}{'ratio':>7}{'one run cpu':>13}{'sweep cpu':>11}{'ratio':>7}")
    for mode in modes:
        (w1, c1), (wn, cn) = best[(mode, "one run")], best[(mode, "sweep")]
        print(f"{mode:<6}{w1:>13.1f}s{wn:>11.1f}s{wn / w1:>7.2f}{c1:>12.1f}s{cn:>10.1f}s{cn / c1:>7.2f}")
    print(f"(a run's whole cost paid for every job would be a ratio of {jobs})")
    if len(modes) == 2:
        print(f"sweep with cache / without: wall {best[('on', 'sweep')][0] / best[('off', 'sweep')][0]:.2f}, "
              f"cpu {best[('on', 'sweep')][1] / best[('off', 'sweep')][1]:.2f}")
    print(f"outputs in {work}")


if __name__ == "__main__":
    main()
