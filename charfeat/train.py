"""Train and evaluate a style-embedding model from a composed config.

    python -m charfeat.train sampler.p=8 loss.margin=0.3
    python -m charfeat.train -m loss.margin=0.1,0.3

With a frozen backbone, features are computed once per split and the head trains on them;
otherwise images go through the backbone at every step. Every run writes metrics.json,
label_mapping.json and checkpoints/last.pt (the trained parts only) under paths.output_dir.
"""

import functools
import json
import logging
import math
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from charfeat.training import distributed
from charfeat.config import register_configs
from charfeat.data.labels import build_label_map, encode_labels, save_label_map
from charfeat.features.extract import batched, encode_images, extract_features
from charfeat.evaluation.metrics import SCALAR_METRICS, chance_metrics, retrieval_metrics
from charfeat.evaluation.plots import save_plots
from charfeat.training.schedule import lr_factor
from charfeat.tracking import NoTracker

log = logging.getLogger(__name__)
logging.getLogger("PML").setLevel(logging.WARNING)  # one line per k-NN call otherwise


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def multirun_group() -> str | None:
    """The sweep dir's name, so the jobs of one multirun share a W&B group."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode.name != "MULTIRUN":
        return None
    return Path(hydra_cfg.sweep.dir).name


def start_tracker(cfg: DictConfig, output_dir: Path, main_process: bool):
    if cfg.logger is None or not main_process:
        return NoTracker()
    log.info("tracker: %s (mode %s)", cfg.logger._target_, cfg.logger.mode)
    # partial: the resolved config holds _target_ keys that instantiate would try to build
    make_tracker = instantiate(cfg.logger, _partial_=True, output_dir=str(output_dir),
                               group=cfg.logger.group or multirun_group())
    return make_tracker(run_config=OmegaConf.to_container(cfg, resolve=True))


def format_table(results: dict[str, dict]) -> str:
    """The end-of-run table: one row per model (trained, untrained, chance), scalar metrics only."""
    header = {"precision_at_1": "P@1", "recall_at_5": "R@5", "recall_at_10": "R@10",
              "mean_average_precision_at_r": "MAP@R", "r_precision": "R-prec"}
    rows = [f"{'model':<10}" + "".join(f"{header[name]:>9}" for name in SCALAR_METRICS)]
    for model, metrics in results.items():
        rows.append(f"{model:<10}" + "".join(f"{metrics[name]:>9.4f}" for name in SCALAR_METRICS))
    return "\n".join(rows)


def scalars(metrics: dict, prefix: str) -> dict[str, float]:
    return {f"{prefix}{name}": metrics[name] for name in SCALAR_METRICS}


def with_class_names(metrics: dict, class_names: list[str]) -> dict:
    """Per-class results keyed by class name, and the confusion matrix with its row/column names."""
    named = dict(metrics)
    named["per_class_precision_at_1"] = {class_names[c]: v for c, v in metrics["per_class_precision_at_1"].items()}
    named["nn_confusion"] = {"classes": class_names, "counts": metrics["nn_confusion"]}
    return named


def save_checkpoint(path: Path, **state) -> None:
    """torch.save to a temp file, then rename: a crash never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class TrainingInterrupted(Exception):
    """SIGTERM/SIGINT arrived; a resumable checkpoint was saved."""

    def __init__(self, signum: int, checkpoint: Path):
        super().__init__(f"interrupted by signal {signum}; resume with ckpt_path={checkpoint}")
        self.signum = signum


class StopSignal:
    """Turns SIGTERM/SIGINT into a flag checked after each step, so a step is never cut in half."""

    def __init__(self):
        self.signum = None

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def config_changes(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ between a checkpoint's config and this run's."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


# belong to this run, not to the one being resumed: where it writes, what it resumes, when it pauses
RUN_LOCAL_KEYS = ("paths", "ckpt_path", "trainer.max_steps")


def resumed_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The checkpoint's config with this run's command-line overrides on top: they win, the rest is
    kept from the checkpoint, so resuming does not quietly change a run's settings."""
    saved = torch.load(cfg.ckpt_path, map_location="cpu", weights_only=False)["config"]
    merged = OmegaConf.create(saved)
    keys = [override.split("=", 1)[0].lstrip("+~") for override in overrides]
    for key in [*RUN_LOCAL_KEYS, *(k for k in keys if not k.startswith("hydra."))]:
        OmegaConf.update(merged, key, OmegaConf.select(cfg, key), force_add=True)  # a group (head=linear): its node
    for change in config_changes(saved, OmegaConf.to_container(merged, resolve=True)):
        if not change.startswith(RUN_LOCAL_KEYS):
            log.info("resume: the command line wins: %s", change)
    return merged


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA; fp32 on CPU, where bf16 matmuls are ~40x slower."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"trainer.precision must be auto, fp32 or bf16, got {precision!r}")
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Build everything from ``cfg``, train, evaluate; return {"trained", "untrained", "chance"}.

    Resuming (``cfg.ckpt_path``) with the command line's ``overrides`` continues the checkpoint's
    config with those overrides on top; without them (a call from Python), ``cfg`` is used as is.
    """
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    if cfg.ckpt_path is not None and overrides is not None:
        cfg = resumed_config(cfg, overrides)
    tc = cfg.trainer
    if tc.epochs < 1:
        raise ValueError(f"trainer.epochs must be >= 1, got {tc.epochs}")
    if tc.accumulate < 1:
        raise ValueError(f"trainer.accumulate must be >= 1, got {tc.accumulate}")
    rank, world_size, device = distributed.setup(tc.device)
    main_process = rank == 0  # alone logs to W&B and writes the output dir
    seed_everything(tc.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    output_dir = Path(cfg.paths.output_dir)
    if main_process:
        output_dir.mkdir(parents=True, exist_ok=True)

    log.info("data: %s", cfg.data._target_)
    data = instantiate(cfg.data)
    if not data.labelled:
        raise ValueError(f"data: {cfg.data._target_} has no labels to train on; embed it with charfeat.embed")
    with distributed.main_process_first():
        records = {split: data.records(split) for split in ("train", "val")}
    label_map = build_label_map(records["train"])
    labels = {split: torch.tensor(encode_labels(records[split], label_map, str(data.jsonl_path(split))))
              for split in records}
    log.info("classes: %d; images: %d train, %d val", len(label_map), len(labels["train"]), len(labels["val"]))
    sampler = instantiate(cfg.sampler)(labels=labels["train"].tolist(), seed=tc.seed,
                                       class_names=list(label_map), rank=rank, world_size=world_size)
    loss_fn = instantiate(cfg.loss)
    if isinstance(loss_fn, functools.partial):  # a loss with weights sized by the run (ArcFace)
        loss_fn = loss_fn(num_classes=len(label_map), embedding_dim=cfg.head.out_dim)
    if main_process:
        save_label_map(label_map, output_dir / "label_mapping.json")

    log.info("backbone: %s (%s)", cfg.backbone.name_or_path, cfg.backbone.train)
    with distributed.main_process_first():
        backbone = instantiate(cfg.backbone).to(device)
    head = instantiate(cfg.head)(in_dim=backbone.hidden_size).to(device)
    loss_fn = loss_fn.to(device)
    frozen = backbone.frozen
    trainable = [p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad]
    groups = [{"params": trainable}]
    if list(loss_fn.parameters()):
        groups.append({"params": list(loss_fn.parameters()), "lr": loss_fn.lr})
    synced = [p for group in groups for p in group["params"]]
    distributed.broadcast_parameters(synced)
    optimizer = instantiate(cfg.optim)(params=groups)
    total_steps = tc.epochs * math.ceil(len(sampler) / tc.accumulate)  # optimizer steps
    warmup_steps = int(tc.warmup_fraction * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_factor, total_steps=total_steps, warmup_steps=warmup_steps,
                                     schedule=tc.schedule))

    if frozen:
        # each process extracts every world_size-th record (into the shared feature cache), then all
        # processes hold all features
        features = {split: distributed.gather_shards(
            extract_features(backbone, data, split, records[split][rank::world_size], tc.embed_batch_size, device),
            len(records[split])) for split in records}

    def embed_batch(split: str, index: list[int]) -> torch.Tensor:
        with autocast(device, tc.precision):
            if frozen:
                out = head(features[split][index].to(device))
            else:
                out = head(encode_images(backbone, data, split, [records[split][i] for i in index], device))
        return out.float()

    @torch.no_grad()
    def embed_val() -> torch.Tensor:
        head.eval()
        backbone.eval()
        order = list(range(len(records["val"])))
        return torch.cat([embed_batch("val", chunk).cpu() for chunk in batched(order, tc.embed_batch_size)])

    def evaluate() -> dict[str, float]:
        return with_class_names(retrieval_metrics(embed_val(), labels["val"], len(label_map)), list(label_map))

    majority = Counter(labels["train"].tolist()).most_common(1)[0][0]
    results = {"untrained": evaluate(), "chance": chance_metrics(labels["val"], majority)}
    state = {"epoch": 0, "step_in_epoch": 0, "step": 0, "best": None, "best_epoch": 0, "stale_epochs": 0,
             "loss_history": []}
    epoch_sampler_state = sampler.state_dict()
    resolved = OmegaConf.to_container(cfg, resolve=True)

    def checkpoint(name: str) -> Path:
        path = output_dir / "checkpoints" / f"{name}.pt"
        if main_process:
            save_checkpoint(path, head=head.state_dict(), backbone_trainable=backbone.trainable_state_dict(),
                            loss=loss_fn.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), sampler=epoch_sampler_state, rng=rng_state(),
                            results=results, label_map=label_map, config=resolved, **state)
        return path

    if cfg.ckpt_path is not None:
        saved = torch.load(cfg.ckpt_path, map_location="cpu", weights_only=False)  # RNG state stays on the CPU
        if saved["label_map"] != label_map:
            raise ValueError(f"ckpt_path={cfg.ckpt_path}: its classes {list(saved['label_map'])} differ from "
                             f"this data's {list(label_map)}")
        head.load_state_dict(saved["head"])
        backbone.load_trainable_state_dict(saved["backbone_trainable"])
        loss_fn.load_state_dict(saved["loss"])
        optimizer.load_state_dict(saved["optimizer"])
        saved["scheduler"].pop("base_lrs")  # this run's learning rates win over the checkpoint's
        scheduler.load_state_dict(saved["scheduler"])
        for group, base_lr, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base_lr * factor(scheduler.last_epoch)
        epoch_sampler_state = saved["sampler"]
        results.update(saved["results"])
        state.update({key: saved[key] for key in state})
        set_rng_state(saved["rng"])
        log.info("resumed from %s at epoch %d, step %d", cfg.ckpt_path, state["epoch"], state["step"])

    tracker = start_tracker(cfg, output_dir, main_process)
    try:
        tracker.summarize(data.issue_summary())  # counts of skipped/filtered records and images
        tracker.log(scalars(results["untrained"], "val/untrained/"), step=0)
        progress = tqdm(total=tc.epochs * len(sampler), initial=state["step"], desc="train", unit="step")
        with StopSignal() as stop:
            while state["epoch"] < tc.epochs:
                epoch = state["epoch"] + 1
                head.train()
                backbone.train()
                sampler.load_state_dict(epoch_sampler_state)
                batches = list(sampler)
                for index in batches[state["step_in_epoch"]:]:
                    batch_labels = labels["train"][index].to(device)
                    loss, mined = loss_fn(*distributed.gather_batch(embed_batch("train", index), batch_labels))
                    group_start = state["step_in_epoch"] - state["step_in_epoch"] % tc.accumulate
                    group_size = min(tc.accumulate, len(batches) - group_start)  # the epoch's last group may be short
                    if loss.requires_grad:
                        (loss / group_size).backward()
                    state["step"] += 1
                    state["loss_history"].append(loss.item())
                    state["step_in_epoch"] += 1
                    if state["step_in_epoch"] - group_start == group_size:
                        distributed.average_gradients(synced)
                        if tc.grad_clip is not None:
                            torch.nn.utils.clip_grad_norm_(trainable, tc.grad_clip)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                    progress.update()
                    progress.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}", mined=mined)
                    tracker.log({"train/loss": loss.item(), "train/mined": mined, "train/lr": scheduler.get_last_lr()[0],
                                 "epoch": epoch}, step=state["step"])
                    at_max = tc.max_steps is not None and state["step"] >= tc.max_steps
                    if distributed.any_rank(stop.signum is not None) or at_max:
                        path = checkpoint("last")
                        if not at_max:
                            raise TrainingInterrupted(stop.signum or signal.SIGTERM, path)
                        log.info("stopped at trainer.max_steps=%d; resume with ckpt_path=%s", tc.max_steps, path)
                        progress.close()
                        tracker.finish()
                        return results
                epoch_sampler_state = sampler.state_dict()
                state.update(epoch=epoch, step_in_epoch=0)
                results["trained"] = evaluate()
                tracker.log(scalars(results["trained"], "val/"), step=state["step"])
                log.info("epoch %d: %s", epoch,
                         ", ".join(f"{k} {v:.4f}" for k, v in scalars(results["trained"], "").items()))
                score = results["trained"][tc.monitor]
                if state["best"] is None or score > state["best"]:
                    state.update(best=score, best_epoch=epoch, stale_epochs=0)
                    checkpoint("best")
                else:
                    state["stale_epochs"] += 1
                checkpoint("last")
                tracker.log({f"val/{tc.monitor}_best": state["best"]}, step=state["step"])
                if tc.patience is not None and state["stale_epochs"] >= tc.patience:
                    log.info("early stop: no better %s for %d epochs (best %.4f at epoch %d)", tc.monitor,
                             tc.patience, state["best"], state["best_epoch"])
                    break
        progress.close()

        results = {name: results[name] for name in ("trained", "untrained", "chance")}
        if not main_process:
            return results
        (output_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
        tracker.log_checkpoint(output_dir / "checkpoints" / "best.pt", name=f"{cfg.task_name}-best")
        if tc.plots:  # of the model as it ends (checkpoints/last.pt)
            tracker.log_images(save_plots(output_dir / "plots", embed_val(), labels["val"], list(label_map), data,
                                          "val", records["val"]))
        tracker.summarize({k: v for model, metrics in results.items() for k, v in scalars(metrics, f"{model}/").items()})
        log.info("results (%d val images; best %s %.4f at epoch %d, saved as checkpoints/best.pt):\n%s",
                 len(labels["val"]), tc.monitor, state["best"], state["best_epoch"], format_table(results))
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish()
    return results


register_configs()


@hydra.main(version_base="1.3", config_path="pkg://charfeat.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    try:
        from hydra.core.hydra_config import HydraConfig

        trained = train(cfg, overrides=list(HydraConfig.get().overrides.task)).get("trained")  # absent when trainer.max_steps stopped the first epoch
        return trained[cfg.optimized_metric] if trained else None
    except TrainingInterrupted as stop:
        log.warning("%s", stop)
        sys.exit(128 + stop.signum)
    finally:
        distributed.teardown()


def cli() -> None:
    """Entry point; under torchrun, processes other than rank 0 write no Hydra output dir."""
    if int(os.environ.get("RANK", "0")) > 0:
        sys.argv += ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=stdout"]
    main()


if __name__ == "__main__":
    cli()
