"""A frozen run from cached features at 10k, 100k and 1M items: wall and CPU time of each part (I/O,
sampling, head training, per-epoch evaluation, final evaluation), peak memory, and the growth
exponent of each between consecutive sizes (log time ratio / log size ratio; 1.0 = linear).

    python experiments/scale/bench.py [--sizes 10000 100000 1000000] [--epochs 10]

Synthetic features (float32, --dim 256, --classes 100 class means plus noise), N items in all,
--val-fraction of them the val split. Per size, two processes: one writes the features into a
`FeatureCache` as extraction does (timed as "cache write", not part of the run), the other is the
run: a real `Trainer` (sampler, head, loss, optimizer and trainer options composed from conf/ as
`python -m charfeat.train` composes them) over a stand-in frozen backbone that can only be read from
the cache, so every feature comes through `FeatureExtractor.extract` and the cache (alias lookup,
shard checksums, row reads). The run's parts are timed inside the Trainer's own methods:

  I/O         Trainer._extract_features (both splits from the cache; the page cache is emptied of
              the cache's files first) and the checkpoints (Trainer.save) of every epoch
  sampling    building the P×K sampler from the train labels + every epoch's list(sampler)
  training    Trainer._train_epoch without its sampling: _step (head, loss, backward, clip, AdamW,
              scheduler) and the loop's bookkeeping per step
  evaluation  Trainer.evaluate (the val split through the head + retrieval_metrics on
              trainer.eval_max_queries seeded queries), for the untrained head and after each epoch
  final       the trained val embeddings through query_results + summarize: every val item queries
              all the others (one row; a run's final evaluation also scores the untrained head and
              the raw features, and adds intervals, suspects and plots)

Training steps are N·(1 − val)/(P·K) per epoch. Above --max-steps-per-epoch the run trains only
the first that many batches of each epoch (all epochs, evaluations and checkpoints still run) and
its training time is scaled up by the ratio: the output says so. The final evaluation is skipped
above --final-max val items. CPU time (user + system, getrusage) is printed beside wall time
because on a shared machine the wall time of one process depends on what else runs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = 0


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def rss_gib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**30


# ----------------------------------------------------------------------------------------------
# The synthetic data set: N items, labels, a train/val split, each item's filename and identity.


def dataset(n: int, classes: int, val_fraction: float):
    """(labels [n] int64, is_val [n] bool) from the seed alone, so both processes agree."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    labels = rng.integers(0, classes, size=n)
    is_val = np.zeros(n, dtype=bool)
    is_val[rng.permutation(n)[:round(n * val_fraction)]] = True
    return labels, is_val


def filename(i: int) -> str:
    return f"{i:07d}.jpg"


def identity(name: str) -> str:
    """Stands for a local file's `identity` (path, inode, size, mtime, ctime): fixed per item."""
    i = int(name[:7])
    return f"file:/data/images/{name}:{1000 + i}:{50000 + i % 7919}:1760000000{i:09d}:1760000000{i:09d}"


def item_key(i: int) -> bytes:
    """Stands for the SHA-256 of an image's pixels: 32 bytes, distinct per item."""
    return hashlib.sha256(f"synthetic image {i}".encode()).digest()


def records(labels, is_val):
    from charfeat.data.records import Record

    out = {"train": [], "val": []}
    for i, (label, val) in enumerate(zip(labels.tolist(), is_val.tolist())):
        name = filename(i)
        out["val" if val else "train"].append(Record(f"id{i}", name, f"style_{label:03d}", line=i + 1))
    return out


class SyntheticData:
    """The DataSource methods a frozen run uses when every feature is cached: identities (no image is
    ever fetched or decoded: load_images raises), the JSONL path error messages name."""

    labelled = True

    def jsonl_path(self, split: str) -> Path:
        return Path(f"/data/{split}.jsonl")

    def identity(self, split: str, name: str) -> str:
        return identity(name)

    def issue_summary(self) -> dict[str, int]:
        return {"data/skipped": 0, "data/filtered": 0}

    def load_images(self, split, records):
        raise AssertionError("an image was read: a feature was missing from the cache")


def stand_in_backbone(cache_dir: str, dim: int):
    """A frozen backbone whose features all come from the cache (it cannot compute one)."""
    import torch

    from charfeat.config import TextMode

    class CachedBackbone(torch.nn.Module):
        frozen = True
        text = TextMode.none
        hidden_size = feature_dim = dim
        feature_cache_dir = cache_dir

        def feature_fingerprint(self) -> dict:
            return {"model": "synthetic (experiments/scale)", "hidden_size": dim, "seed": SEED}

        def trainable_state_dict(self) -> dict:
            return {}

        def load_trainable_state_dict(self, state: dict) -> None:
            assert not state

        def finish(self, features):
            return features  # no Matryoshka cut, no normalisation

        def pool(self, **inputs):
            raise AssertionError("the backbone ran: a feature was missing from the cache")

        forward = pool

    return CachedBackbone()


# ----------------------------------------------------------------------------------------------
# Process 1: write the features into the cache, as FeatureExtractor does on a first run.


def write_cache(args) -> dict:
    import numpy as np
    import torch

    from charfeat.features.cache import FeatureCache, alias_key
    from charfeat.features.extract import FeatureExtractor

    labels, is_val = dataset(args.n, args.classes, args.val_fraction)
    rng = np.random.default_rng(SEED + 1)
    centres = rng.standard_normal((args.classes, args.dim), dtype=np.float32)
    backbone = stand_in_backbone(args.cache_dir, args.dim)
    cache: FeatureCache = FeatureExtractor(backbone, args.embed_batch_size, torch.device("cpu")).cache
    window = 8 * args.embed_batch_size  # extract.py's window of records
    start = clock()
    for split in ("train", "val"):  # one extraction per split, each flushed at its end
        items = np.flatnonzero(is_val if split == "val" else ~is_val)
        for w in range(0, len(items), window):
            chunk = items[w:w + window]
            noise = rng.standard_normal((len(chunk), args.dim), dtype=np.float32)
            features = torch.from_numpy(centres[labels[chunk]] + 2.0 * noise)
            keys = [item_key(int(i)) for i in chunk]
            cache.add_aliases([alias_key(identity(filename(int(i))), None) for i in chunk], keys)
            for b in range(0, len(chunk), args.embed_batch_size):
                cache.put(keys[b:b + args.embed_batch_size], features[b:b + args.embed_batch_size])
        cache.flush()
    end = clock()
    files = list(cache.dir.iterdir())
    return {"cache_write_s": end[0] - start[0], "cache_write_cpu_s": end[1] - start[1], "cache_files": len(files),
            "cache_gib": sum(f.stat().st_size for f in files) / 2**30, "write_peak_rss_gib": peak_rss_gib()}


def evict(directory: Path) -> None:
    """Drop the cache's files from the page cache, so the run reads them from disk."""
    for path in directory.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------------------------
# Process 2: the run.


def composed(args):
    """The train config as `python -m charfeat.train logger=none trainer.epochs=... ...` composes it."""
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict

    from charfeat.config import register_configs

    register_configs()
    with initialize_config_module(config_module="charfeat.conf", version_base="1.3"):
        cfg = compose("train", overrides=[
            "logger=none", "trainer.device=cpu", f"trainer.epochs={args.epochs}",
            f"trainer.eval_max_queries={args.eval_queries}", f"trainer.embed_batch_size={args.embed_batch_size}",
            f"backbone.feature_cache={args.cache_dir}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(Path(args.cache_dir).parent / "run")
    return cfg


def clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: user + system, every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime


class Timer:
    """Wall and CPU seconds and calls per name, summed over every call of a wrapped function or part."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def add(self, name: str, start: tuple[float, float]) -> None:
        end = clock()
        self.wall[name] = self.wall.get(name, 0.0) + end[0] - start[0]
        self.cpu[name] = self.cpu.get(name, 0.0) + end[1] - start[1]
        self.calls[name] = self.calls.get(name, 0) + 1

    def wrap(self, name: str, fn):
        def timed(*a, **kw):
            start = clock()
            try:
                return fn(*a, **kw)
            finally:
                self.add(name, start)
        return timed

    @contextlib.contextmanager
    def part(self, name: str):
        start = clock()
        try:
            yield
        finally:
            self.add(name, start)


class TimedSampler:
    """The run's sampler, its epochs timed; with ``cap``, the trainer gets only an epoch's first
    ``cap`` batches (the whole epoch is still drawn and timed)."""

    def __init__(self, sampler, timer: Timer, cap: int | None):
        self.sampler, self.timer, self.cap = sampler, timer, cap
        self.drawn = self.given = 0

    def __len__(self) -> int:
        return len(self.sampler)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)

    def __iter__(self):
        batches = self.timer.wrap("sampling_epochs", list)(self.sampler)
        self.drawn += len(batches)
        given = batches if self.cap is None else batches[:self.cap]
        self.given += len(given)
        return iter(given)


def run(args) -> dict:
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from charfeat.data.labels import build_label_map
    from charfeat.evaluation.metrics import query_results, retrieval_metrics, summarize
    from charfeat.tracking import NoTracker
    from charfeat.training.loop import Trainer

    cfg = composed(args)
    tc = cfg.trainer
    labels, is_val = dataset(args.n, args.classes, args.val_fraction)
    split_records = records(labels, is_val)  # what reading the JSONL files gives (not timed)
    del labels, is_val
    out: dict = {"rss_records_gib": rss_gib()}
    for directory in Path(args.cache_dir).iterdir():
        evict(directory)
    timer = Timer()

    with timer.part("sampler_build"):  # as build_trainer makes it
        label_map = build_label_map(split_records["train"])
        sampler = instantiate(cfg.sampler)(labels=[label_map[r.label] for r in split_records["train"]],
                                           seed=tc.seed, class_names=list(label_map), rank=0, world_size=1)
    steps_per_epoch = len(sampler)
    cap = args.max_steps_per_epoch if steps_per_epoch > args.max_steps_per_epoch else None
    with timer.part("trainer_build"):
        backbone = stand_in_backbone(args.cache_dir, args.dim)
        head = instantiate(cfg.head)(in_dim=backbone.hidden_size)
        trainer = Trainer(tc, data=SyntheticData(), records=split_records, label_map=label_map,
                          sampler=TimedSampler(sampler, timer, cap), backbone=backbone, head=head,
                          loss_fn=instantiate(cfg.loss), make_optimizer=instantiate(cfg.optim), tracker=NoTracker(),
                          output_dir=Path(cfg.paths.output_dir),
                          config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), run_name="scale",
                          evaluation=cfg.eval, device=torch.device("cpu"))

    # Trainer.fit, its parts timed: the features of both splits from the cache (a frozen backbone) ...
    with timer.part("io_read"):
        trainer._extract_features()
    out["peak_after_io_gib"], out["rss_after_io_gib"] = peak_rss_gib(), rss_gib()
    assert trainer.features["train"].shape == (len(split_records["train"]), args.dim)
    # ... the untrained head's evaluation, then the epochs (batches, evaluations, checkpoints).
    trainer.evaluate = timer.wrap("evaluation", trainer.evaluate)
    trainer.save = timer.wrap("checkpoints", trainer.save)
    trainer._train_epoch = timer.wrap("train_epoch", trainer._train_epoch)
    trainer._step = timer.wrap("step", trainer._step)
    with timer.part("untrained_evaluation"):
        timer.wrap("evaluation", lambda: trainer.results.update(untrained=trainer.score(trainer.embed_split("val"))))()
    with timer.part("epochs"):
        paused = trainer._run_epochs()
    assert not paused and trainer.progress.epoch == args.epochs
    out["peak_after_training_gib"] = peak_rss_gib()
    full_steps, ran = args.epochs * steps_per_epoch, timer.calls["step"]
    assert ran == trainer.sampler.given and trainer.sampler.drawn == full_steps
    assert timer.calls["evaluation"] == args.epochs + 1

    # The final evaluation's search: the trained head's val embeddings, every item a query.
    val_labels = trainer.labels["val"]
    with timer.part("eval_10k_once"):  # what trainer.eval_max_queries=10000 would cost per evaluation
        retrieval_metrics(trainer.embed_split("val"), val_labels, len(label_map), 10_000, tc.seed)
    if len(val_labels) <= args.final_max:
        with timer.part("final"):
            final = summarize(query_results(trainer.embed_split("val"), val_labels, len(label_map)))
        out.update(final_map_at_r=final["mean_average_precision_at_r"], final_p_at_1=final["precision_at_1"])

    out.update(n_train=len(trainer.labels["train"]), n_val=len(val_labels), steps_per_epoch=steps_per_epoch,
               steps_run=ran, steps_full=full_steps, capped=cap is not None, evaluations=timer.calls["evaluation"],
               checkpoints=timer.calls["checkpoints"], monitor_last=trainer.results["history"][-1][tc.monitor],
               peak_rss_gib=peak_rss_gib())
    for kind, seconds in (("", timer.wall), ("cpu_", timer.cpu)):
        for name, value in seconds.items():
            out[f"{name}_{kind}s"] = value
        out[f"sampling_{kind}s"] = seconds["sampler_build"] + seconds["sampling_epochs"]
        out[f"training_measured_{kind}s"] = seconds["train_epoch"] - seconds["sampling_epochs"]
        out[f"training_{kind}s"] = out[f"training_measured_{kind}s"] * full_steps / ran
        out[f"ms_per_step_{kind}"] = 1000 * seconds["step"] / ran
        # what _run_epochs spent beside the epochs' batches, their evaluations and checkpoints
        out[f"loop_other_{kind}s"] = seconds["epochs"] - seconds["train_epoch"] - seconds["checkpoints"] - (
            seconds["evaluation"] - seconds["untrained_evaluation"])
    return out


# ----------------------------------------------------------------------------------------------
# The driver: both processes per size, then the table and the growth exponents.

PARTS = [  # (name, column title): the run's parts, then what is not part of it
    ("io_read", "I/O read"), ("checkpoints", "ckpt"), ("sampling", "sampling"), ("training", "training"),
    ("evaluation", "eval/epoch"), ("final", "final eval"), ("cache_write", "cache write"),
]
RUN = ["trainer_build", "io_read", "checkpoints", "sampling", "training", "evaluation", "loop_other", "final"]


def child(args, mode: str, workdir: Path) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--n", str(args.n), "--cache-dir", str(workdir / "features"),
               *(f"--{k.replace('_', '-')}={getattr(args, k)}" for k in (
                   "epochs", "dim", "classes", "val_fraction", "eval_queries", "embed_batch_size",
                   "max_steps_per_epoch", "final_max", "threads"))]
    log = workdir / f"{mode}.stderr"
    with open(log, "w") as err:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"{mode} n={args.n} failed ({done.returncode}):\n{done.stdout}\n{log.read_text()[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def exponent(small: tuple[int, float | None], large: tuple[int, float | None]) -> str:
    (n1, t1), (n2, t2) = small, large
    if t1 is None or t2 is None or t1 <= 0 or t2 <= 0:
        return "-"
    return f"{math.log(t2 / t1) / math.log(n2 / n1):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--dim", type=int, default=256, help="the features' width (the backbone's hidden size)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--eval-queries", type=int, default=1000, help="trainer.eval_max_queries")
    parser.add_argument("--embed-batch-size", type=int, default=32, help="trainer.embed_batch_size")
    parser.add_argument("--max-steps-per-epoch", type=int, default=2813,
                        help="above this, train the first that many batches of each epoch and scale the time")
    parser.add_argument("--final-max", type=int, default=100_000, help="no final evaluation above this many val items")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: batches of 32 on a shared 2-core machine; 2 oversubscribe it)")
    parser.add_argument("--workdir", default=None, help="where the caches go (default: a temp dir, removed)")
    parser.add_argument("--child", choices=["write", "run"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        import pytorch_metric_learning.losses  # noqa: F401 - imported before the baseline RSS
        import torch

        import charfeat.training.loop  # noqa: F401

        torch.set_num_threads(args.threads)
        start_rss = rss_gib()
        result = write_cache(args) if args.child == "write" else run(args)
        result["rss_start_gib"] = start_rss
        print("RESULT " + json.dumps(result), flush=True)
        return

    import platform

    import torch

    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({args.threads} thread(s)), load average {os.getloadavg()[0]:.2f}")
    print(f"synthetic features: {args.classes} classes, dim {args.dim}, float32; val {args.val_fraction:.0%} of N; "
          f"{args.epochs} epochs, trainer.eval_max_queries={args.eval_queries}; sampler, head, loss, optim, trainer "
          f"from conf/ (defaults)")
    results = {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="charfeat-scale-", dir=args.workdir) as tmp:
            args.n = n
            written = child(args, "write", Path(tmp))
            result = {**child(args, "run", Path(tmp)), **written}
        for kind in ("", "cpu_"):
            result[f"total_{kind}s"] = sum(result.get(f"{name}_{kind}s") or 0.0 for name in RUN)
        result["peak_growth_gib"] = result["peak_rss_gib"] - result["rss_start_gib"]
        results[n] = result
        print(f"n={n:,}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})}",
              flush=True)

    first = results[args.sizes[0]]
    for kind, title in (("", "wall seconds"), ("cpu_", "CPU seconds (user + system)")):
        print(f"\n{title} per part (training scaled up from the steps run where fewer than all)")
        print(f"{'items':>9} {'train/val':>16} {'steps run/all':>15} " + " ".join(f"{t:>11}" for _, t in PARTS)
              + f" {'run total':>10}" + (f" {'peak RSS':>8} {'- start':>7}" if not kind else ""))
        for n in args.sizes:
            r = results[n]
            cells = [r.get(f"{name}_{kind}s") for name, _ in PARTS]
            print(f"{n:>9,} {r['n_train']:>9,}/{r['n_val']:<6,} {r['steps_run']:>7,}/{r['steps_full']:<7,} "
                  + " ".join(f"{c:>11.2f}" if c is not None else f"{'skipped':>11}" for c in cells)
                  + f" {r[f'total_{kind}s']:>10.1f}"
                  + (f" {r['peak_rss_gib']:>7.2f}G {r['peak_growth_gib']:>6.2f}G" if not kind else ""))
    print(f"\nckpt: {first['checkpoints']} checkpoint writes (last.pt every epoch, best.pt when better); eval/epoch: "
          f"{first['evaluations']} evaluations (the untrained head's, then one per epoch); run total: all but the "
          "cache write, with building the Trainer and the loop's own bookkeeping; peak RSS - start: over the "
          "process's RSS once torch and charfeat are imported")
    for n in args.sizes:
        r = results[n]
        print(f"{n:,}: {r['ms_per_step_']:.2f} ms wall, {r['ms_per_step_cpu_']:.2f} ms CPU per step"
              + (f"; training timed on {r['steps_run']:,} of {r['steps_full']:,} steps (the first "
                 f"{args.max_steps_per_epoch:,} of each epoch): {r['training_measured_s']:.1f} s wall measured"
                 if r["capped"] else "")
              + f"; build Trainer {r['trainer_build_s']:.2f} s; loop bookkeeping {r['loop_other_s']:.2f} s; "
              f"one evaluation on 10,000 val queries {r['eval_10k_once_s']:.2f} s; RSS with the records "
              f"{r['rss_records_gib']:.2f}G, peak during I/O {r['peak_after_io_gib']:.2f}G, after it "
              f"{r['rss_after_io_gib']:.2f}G, peak by the end of training {r['peak_after_training_gib']:.2f}G; "
              f"cache {r['cache_gib']:.2f} GiB in {r['cache_files']} files, its writer's peak RSS "
              f"{r['write_peak_rss_gib']:.2f}G")
    keys = PARTS + [("total", "run total")]
    for kind, title in (("", "wall"), ("cpu_", "CPU")):
        print(f"\ngrowth exponent of {title} time between consecutive sizes (1.0 = linear)"
              + ("; last column: peak RSS - start" if not kind else ""))
        print(f"{'sizes':>21} " + " ".join(f"{t:>11}" for _, t in keys) + (f" {'memory':>8}" if not kind else ""))
        for small, large in zip(args.sizes, args.sizes[1:]):
            a, b = results[small], results[large]
            row = [exponent((small, a.get(f"{name}_{kind}s")), (large, b.get(f"{name}_{kind}s"))) for name, _ in keys]
            if not kind:
                row.append(exponent((small, a["peak_growth_gib"]), (large, b["peak_growth_gib"])))
            print(f"{f'{small:,} -> {large:,}':>21} " + " ".join(f"{c:>11}" for c in row[:len(keys)])
                  + (f" {row[-1]:>8}" if not kind else ""))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
