"""Frozen-backbone runs and a sweep through the feature cache, timed in one process.

    python experiments/feature_cache/run.py [--model tiny|small] [--threads N] [--workdir DIR]

Prints, for the sample set:
  extract  one feature-extraction pass over train+val (model already loaded, no cache)
  run      a 10-epoch frozen training run with an empty cache (train(cfg): model load, extraction
           into the cache, 10 epochs, evaluation, checkpoint) and its ratio to `extract`
  sweep    8 runs (head mlp|linear x margin 0.1..0.4) sharing a fresh cache, and their ratio
Start-up (imports, sample-set generation, building the random model, one 1-epoch warm-up run
on its own cache) is excluded: it happens once, before any timing. Each figure is given as wall
time and as this process's CPU time (one torch thread), since the machine may be shared. Everything runs in this process, as the jobs of an in-process sweep.
"""

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from charfeat.config import register_configs  # noqa: E402
from charfeat.features.extract import ExtractionStats, FeatureExtractor  # noqa: E402
from charfeat.train import train  # noqa: E402

# "small": a random Qwen3-VL with more compute per image than the test model (hidden 512, 4 layers,
# vision 256 x 4) on 224x224 images (49 LLM tokens each), so extraction is not negligible next to
# the head's training, as with a real backbone.
MODELS = {
    "tiny": ({}, ["data.image_size=96"]),
    "small": ({"hidden_size": 512, "num_layers": 4, "num_heads": 8, "num_kv_heads": 4,
               "vision_hidden_size": 256, "vision_depth": 4},
              ["data.image_size=224", "backbone.max_pixels=50176"]),
}


def config(workdir: Path, model_dir: Path, overrides: list[str]):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="charfeat.conf", version_base="1.3"):
        cfg = compose("train", overrides=["logger=none", f"backbone.name_or_path={model_dir}", *overrides])
    with open_dict(cfg):
        cfg.paths.cache_dir = str(workdir)
        cfg.paths.output_dir = str(workdir / "runs" / str(time.monotonic_ns()))
    return cfg


class Timer:
    """Wall and CPU seconds of a block. With one torch thread, CPU time does not count the time
    other processes on a shared machine take from this one."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def ratio(a: Timer, b: Timer) -> str:
    return f"{a.wall:.2f} s wall = {a.wall / b.wall:.2f} x ({a.cpu:.2f} s CPU = {a.cpu / b.cpu:.2f} x)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(MODELS), default="small")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--plots", action="store_true", help="keep trainer.plots (t-SNE etc., ~2.5 s per run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="charfeat-bench-"))
    model_kwargs, model_overrides = MODELS[args.model]

    from charfeat.models.backbone.tiny import build_tiny_qwen3_vl

    model_dir = build_tiny_qwen3_vl(workdir / "models" / args.model, **model_kwargs)
    base = [*model_overrides, "trainer.epochs=10", f"trainer.plots={args.plots}"]

    # one extraction pass, no cache, model loaded beforehand: timed before and after the runs
    cfg = config(workdir, model_dir, [*base, "backbone.feature_cache=null"])
    data = instantiate(cfg.data)
    records = {split: data.records(split) for split in ("train", "val")}  # generates the sample set
    backbone = instantiate(cfg.backbone)
    extractor = FeatureExtractor(backbone, cfg.trainer.embed_batch_size, torch.device("cpu"))
    extractor.extract(data, "val", records["val"][:8])

    def extraction_pass() -> tuple[Timer, ExtractionStats]:
        stats = ExtractionStats()
        with Timer() as timer:
            for split in records:
                extractor.extract(data, split, records[split], stats=stats)
        return timer, stats

    before, stats = extraction_pass()
    n = stats.images
    print(f"model {args.model}: {sum(p.numel() for p in backbone.parameters()) / 1e6:.1f} M params, "
          f"{n} images ({len(records['train'])} train + {len(records['val'])} val), torch threads {args.threads}")
    print(f"extract (before): {before.wall:.2f} s wall, {before.cpu:.2f} s CPU ({n / before.wall:.1f} images/s, "
          f"padding {stats.padding_share:.1%})")

    # warm-up: the first train() in a process pays one-time imports (metrics, faiss): start-up, not run time
    train(config(workdir, model_dir, [*base, "trainer.epochs=1", f"backbone.feature_cache={workdir / 'warmup'}"]))
    cache = workdir / "features"
    shutil.rmtree(cache, ignore_errors=True)
    with Timer() as run:
        train(config(workdir, model_dir, [*base, f"backbone.feature_cache={cache}"]))
    with Timer() as warm:
        train(config(workdir, model_dir, [*base, f"backbone.feature_cache={cache}"]))

    shutil.rmtree(cache, ignore_errors=True)
    jobs = [(head, margin) for head in ("mlp", "linear") for margin in (0.1, 0.2, 0.3, 0.4)]
    with Timer() as sweep:
        for head, margin in jobs:
            train(config(workdir, model_dir, [*base, f"backbone.feature_cache={cache}", f"head={head}",
                                              f"loss.margin={margin}"]))
    after, _ = extraction_pass()
    extract = Timer()
    extract.wall, extract.cpu = (before.wall + after.wall) / 2, (before.cpu + after.cpu) / 2
    print(f"extract (after): {after.wall:.2f} s wall, {after.cpu:.2f} s CPU; one pass = the mean: "
          f"{extract.wall:.2f} s wall, {extract.cpu:.2f} s CPU")
    print(f"run: 10-epoch frozen run, cold cache: {ratio(run, extract)} extraction (target <= 1.2; "
          f"recomputing every epoch costs >= 10)")
    print(f"     the same run, warm cache: {ratio(warm, extract)}")
    print(f"sweep: {len(jobs)} jobs (head x margin), shared cold cache: {ratio(sweep, extract)} extraction "
          f"(target <= 1.5); {sweep.wall / len(jobs):.2f} s wall per job")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
