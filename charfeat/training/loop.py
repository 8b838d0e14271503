"""The training loop: P×K batches through the backbone (or its cached features), the head and the
loss; an evaluation and checkpoints after every epoch; exact resume; a clean stop on SIGTERM, SIGINT
or SIGUSR2 (``signals.py``).

With a frozen backbone, features are extracted once per split (through the feature cache) and the
head trains on them (with ``augment``, ``augment.views`` views of each training image, one sampled per
image and epoch); otherwise images go through the input pipeline (`charfeat.data.loader`: worker
processes, augmented afresh every epoch) and the backbone at every step. A batch whose images exceed
``backbone.max_tokens_per_batch`` runs through the backbone in chunks (`_chunked_backward`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import signal
from pathlib import Path
from typing import Callable

import torch

from charfeat.config import Precision
from charfeat.console import progress
from charfeat.data.augment import Augment, augments
from charfeat.data.loader import Chunk, ViewSpec
from charfeat.data.labels import encode_labels
from charfeat.data.records import Record
from charfeat.data.sources.base import DataSource
from charfeat.errors import ConfigError, UserError
from charfeat.evaluation.final import SplitEmbeddings, evaluate_split
from charfeat.evaluation.metrics import retrieval_metrics
from charfeat.evaluation.results import scalars, with_class_names
from charfeat.features.extract import FeatureExtractor
from charfeat.inference import embed_features, embed_records
from charfeat.models.backbone.inputs import batch_size, halves_after_oom, select_rows
from charfeat.training import distributed
from charfeat.training.schedule import lr_factor
from charfeat.training.signals import StopSignal, TrainingInterrupted
from charfeat.training.checkpoint import read_checkpoint, save_checkpoint
from charfeat.training.state import Progress, rng_state, set_rng_state

log = logging.getLogger(__name__)


def autocast(device: torch.device, precision: Precision):
    """bf16 autocast on CUDA; fp32 on CPU, where bf16 matmuls are ~40x slower."""
    use_bf16 = precision == Precision.bf16 or (precision == Precision.auto and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)


class Trainer:
    """Trains ``head`` (and whatever of ``backbone`` is trainable) with ``loss_fn`` on P×K batches.

    ``cfg`` is the trainer config group; ``records`` holds the train and val splits, whose labels
    ``label_map`` encodes; ``make_optimizer(params=groups)`` builds the optimizer; ``config`` is
    the run's resolved config, saved in every checkpoint; ``evaluation`` is the ``eval`` config group
    (the final evaluation's intervals and suspects); ``augment`` changes the training images. Only
    ``rank`` 0 writes ``output_dir``.
    """

    def __init__(self, cfg, *, data: DataSource, records: dict[str, list[Record]], label_map: dict[str, int],
                 sampler, backbone: torch.nn.Module, head: torch.nn.Module, loss_fn: torch.nn.Module,
                 make_optimizer: Callable, tracker, output_dir: Path, config: dict, run_name: str, evaluation,
                 augment: Augment | None = None, rank: int = 0, world_size: int = 1,
                 device: torch.device = torch.device("cpu")):
        self.cfg, self.data, self.records, self.label_map = cfg, data, records, label_map
        self.sampler, self.backbone, self.head, self.loss_fn = sampler, backbone, head, loss_fn
        self.tracker, self.output_dir, self.config, self.run_name = tracker, output_dir, config, run_name
        self.rank, self.world_size, self.device = rank, world_size, device
        self.evaluation, self.augment = evaluation, augment
        self.labels = {split: torch.tensor(encode_labels(split_records, label_map, str(data.jsonl_path(split))))
                       for split, split_records in records.items()}
        self.extractor = FeatureExtractor(backbone, cfg.embed_batch_size, device)
        self.trainable = [p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad]
        groups = [{"params": self.trainable}]
        if list(loss_fn.parameters()):
            groups.append({"params": list(loss_fn.parameters()), "lr": loss_fn.lr})
        self.synced = [p for group in groups for p in group["params"]]
        distributed.broadcast_parameters(self.synced)
        self.optimizer = make_optimizer(params=groups)
        total_steps = cfg.epochs * math.ceil(len(sampler) / cfg.accumulate)  # optimizer steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, functools.partial(
            lr_factor, total_steps=total_steps, warmup_steps=int(cfg.warmup_fraction * total_steps),
            schedule=cfg.schedule))
        self.progress = Progress()
        self.sampler_state = sampler.state_dict()  # as the current epoch began: replays its batches
        self.features: dict[str, torch.Tensor] | None = None
        self.baselines: dict[str, torch.Tensor] = {}  # val embeddings of the untrained head, backbone features
        self.results: dict[str, dict] = {}
        self.completed = False  # every epoch ran, or early stopping ended the run

    @property
    def main_process(self) -> bool:
        return self.rank == 0

    def fit(self, saved: dict | None = None, source: str | None = None) -> dict[str, dict]:
        """Train, evaluating after every epoch; write metrics.json and plots (rank 0).

        ``saved`` is the checkpoint read from ``source`` to resume from. Returns metrics.json's content
        on rank 0 (trained, untrained, backbone and chance rows, with intervals), {"trained", "untrained"}
        elsewhere; "trained" is the best epoch's model (the one ``checkpoints/best.pt`` holds). A run
        paused by ``trainer.max_steps`` returns what it has so far (no "trained" before its first epoch
        ends) and writes no metrics.json.
        """
        if self.backbone.frozen:
            self._extract_features()
        self.baselines = {"untrained": self.embed_split("val"), "backbone": self.backbone_features("val")}
        self.results = {"untrained": self.score(self.baselines["untrained"])}
        if saved is not None:
            self.resume(saved, source)
        try:
            self.tracker.summarize(self.data.issue_summary())  # counts of skipped/filtered records and images
            self.tracker.log(scalars(self.results["untrained"], "val/untrained/"), step=0)
            if self._run_epochs():
                self.tracker.finish()
                return self.results
            self.completed = True
            results = self._write_outputs()
        except BaseException:
            self.tracker.finish(exit_code=1)
            raise
        self.tracker.finish()
        return results

    def shard(self, records: list) -> list:
        return distributed.shard(records, self.rank, self.world_size)

    def _extract_features(self) -> None:
        """Every process holds every feature (the training split's as [views, N, dim] when augmented);
        each extracted its contiguous share into the shared feature cache."""
        if augments(self.augment):
            train = torch.stack([self._gathered("train", ViewSpec(self.augment, view, by_content=True))
                                 for view in range(self.augment.views)])
            log.info("augment=%s: %d view(s) of each training image; each epoch uses one", self.augment.name,
                     self.augment.views)
        else:
            train = self._gathered("train")
        self.features = {"train": train, "val": self._gathered("val")}

    def _gathered(self, split: str, view: ViewSpec = ViewSpec()) -> torch.Tensor:
        """The backbone's features of every record of ``split`` (in ``view``), on every process, each
        process extracting a contiguous share."""
        records = self.records[split]
        return distributed.gather_shards(self.extractor.extract(self.data, split, self.shard(records), view=view),
                                         len(records))

    def _views(self, epoch: int) -> torch.Tensor | None:
        """Which cached view of each training image ``epoch`` uses (seeded by the epoch: a resumed run
        uses the same), or None without views."""
        if self.features is None or self.features["train"].dim() != 3:
            return None
        rng = self.augment.rng(epoch, 0)
        return torch.from_numpy(rng.integers(self.augment.views, size=len(self.records["train"])))

    def _run_epochs(self) -> bool:
        """The remaining epochs; True when ``trainer.max_steps`` paused the run."""
        p = self.progress
        bar = progress(total=self.cfg.epochs * len(self.sampler), initial=p.step, desc="train", unit="step", main=True)
        try:
            with StopSignal() as stop:
                while p.epoch < self.cfg.epochs:
                    if self._train_epoch(p.epoch + 1, stop, bar):
                        return True
                    if self._end_epoch(p.epoch + 1):
                        break
        finally:
            bar.close()
        return False

    def _train_epoch(self, epoch: int, stop: StopSignal, bar) -> bool:
        """The epoch's remaining batches; True when ``trainer.max_steps`` was reached."""
        p = self.progress
        self.head.train()
        self.backbone.train()
        self.sampler.load_state_dict(self.sampler_state)
        batches = list(self.sampler)
        remaining = batches[p.step_in_epoch:]
        views = self._views(epoch)
        inputs = self.extractor.loader(self.data, "train", self.records["train"], remaining,
                                       ViewSpec(self.augment, epoch), whole_groups=True) if self.features is None else None
        try:
            return self._train_batches(epoch, remaining, len(batches), inputs, views, stop, bar)
        finally:
            del inputs  # ends the input workers, also when the loop stops early

    def _train_batches(self, epoch: int, remaining: list[list[int]], epoch_batches: int, inputs, views,
                       stop: StopSignal, bar) -> bool:
        """Train on ``remaining`` (the input pipeline's ``inputs`` for them, or cached features of ``views``)."""
        p, max_steps = self.progress, self.cfg.max_steps
        for index in remaining:
            chunks = next(inputs) if inputs is not None else None
            loss, mined = self._step(index, epoch_batches, chunks, views)
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}", mined=mined)
            self.tracker.log({"train/loss": loss, "train/mined": mined,
                              "train/lr": self.scheduler.get_last_lr()[0], "epoch": epoch}, step=p.step)
            at_max = max_steps is not None and p.step >= max_steps
            if distributed.any_rank(stop.signum is not None) or at_max:
                path = self.save("last")
                if not at_max:
                    signum = stop.signum or signal.SIGTERM  # another rank got it
                    raise TrainingInterrupted(signum, path, stop.previous(signum))
                log.info("stopped at trainer.max_steps=%d; resume with ckpt_path=%s", max_steps, path)
                return True
        return False

    def _step(self, index: list[int], epoch_batches: int, chunks: list[Chunk] | None,
              views: torch.Tensor | None) -> tuple[float, int]:
        """One batch forward and backward; an optimizer step when its accumulation group is complete.

        ``chunks``: the batch's inputs from the input pipeline (a trainable backbone), else the head
        trains on cached features (of ``views``, when augmented)."""
        p, accumulate = self.progress, self.cfg.accumulate
        batch_labels = self.labels["train"][index].to(self.device)
        group_start = p.step_in_epoch - p.step_in_epoch % accumulate
        group_size = min(accumulate, epoch_batches - group_start)  # the epoch's last group may be short
        if chunks is None:
            rows = torch.as_tensor(index)
            features = self.features["train"][rows] if views is None else self.features["train"][views[rows], rows]
            loss, mined = self._loss(self._head(features.to(self.device)), batch_labels, group_size)
        elif len(chunks) > 1:
            loss, mined = self._chunked_backward(chunks, len(index), batch_labels, group_size)
        else:
            loss, mined = self._whole_backward(chunks[0], batch_labels, group_size, p.step_in_epoch == group_start)
        p.step += 1
        p.loss_history.append(loss)
        p.step_in_epoch += 1
        if p.step_in_epoch - group_start == group_size:
            distributed.average_gradients(self.synced)
            if self.cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss, mined

    def _head(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone features [B, feature_dim] -> float32 embeddings, under the trainer's autocast."""
        with autocast(self.device, self.cfg.precision):
            return self.head(features).float()

    def _pool(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast(self.device, self.cfg.precision):
            return self.backbone.pool(**{name: value.to(self.device, non_blocking=True)
                                         for name, value in inputs.items()})

    def _loss(self, embeddings: torch.Tensor, labels: torch.Tensor, group_size: int) -> tuple[float, int]:
        """The batch's loss (over every rank's embeddings), backpropagated, scaled for accumulation."""
        loss, mined = self.loss_fn(*distributed.gather_batch(embeddings, labels))
        if loss.requires_grad:
            (loss / group_size).backward()
        return loss.item(), mined

    def _whole_backward(self, chunk: Chunk, labels: torch.Tensor, group_size: int, retry: bool) -> tuple[float, int]:
        """The batch through the backbone at once. If it runs out of accelerator memory and no earlier
        batch of its accumulation group left gradients behind (``retry``), it runs again in two halves."""
        try:
            return self._loss(self._embed_chunk(chunk), labels, group_size)
        except torch.OutOfMemoryError:
            rows = batch_size(chunk.inputs)
            if not retry or rows < 2:
                raise
        self.optimizer.zero_grad(set_to_none=True)  # whatever the failed backward left
        halves = [Chunk([chunk.positions[i] for i in part], select_rows(chunk.inputs, part))
                  for part in halves_after_oom(chunk.inputs, "a training batch")]
        return self._chunked_backward(halves, rows, labels, group_size)

    def _embed_chunk(self, chunk: Chunk) -> torch.Tensor:
        """A whole batch's embeddings, in batch order (no local name holds the activations, so a failed
        attempt frees them when its exception is handled)."""
        embeddings = self._head(self.backbone.finish(self._pool(chunk.inputs)))
        return embeddings[torch.as_tensor(order(chunk.positions), device=embeddings.device)]

    def _chunked_backward(self, chunks: list[Chunk], rows: int, labels: torch.Tensor,
                          group_size: int) -> tuple[float, int]:
        """The batch's loss and gradients with one chunk's activations in memory at a time (the
        gradient-cache method): the chunks' features without gradients, the loss and its gradient
        with respect to those features, then each chunk again with gradients, given that gradient.
        Each chunk's second pass replays its first pass's random draws (LoRA dropout): the gradients
        are those of one pass over the whole batch."""
        states, pooled = [], []
        with torch.no_grad():
            for chunk in chunks:
                states.append(rng_state())
                pooled.append(self._pool(chunk.inputs))
        features = torch.empty(rows, pooled[0].shape[1], dtype=pooled[0].dtype, device=pooled[0].device)
        for chunk, values in zip(chunks, pooled):
            features[torch.as_tensor(chunk.positions, device=features.device)] = values
        features.requires_grad_(True)
        loss, mined = self._loss(self._head(self.backbone.finish(features)), labels, group_size)
        if features.grad is not None:
            after = rng_state()
            for chunk, state in zip(chunks, states):
                set_rng_state(state)
                grad = features.grad[torch.as_tensor(chunk.positions, device=features.device)]
                self._pool(chunk.inputs).backward(grad)
            set_rng_state(after)
        return loss, mined

    def _end_epoch(self, epoch: int) -> bool:
        """Evaluate (every ``trainer.eval_every`` epochs and after the last), keep the best evaluated
        epoch (its metrics are "trained", its model best.pt), save the last; True when early stopping
        ends the run. Every rank decides alike: they share rank 0's metrics."""
        p, monitor, patience = self.progress, self.cfg.monitor, self.cfg.patience
        self.sampler_state = self.sampler.state_dict()
        p.epoch, p.step_in_epoch = epoch, 0
        if epoch % self.cfg.eval_every and epoch < self.cfg.epochs:
            self.save("last")
            return False
        metrics = self.evaluate()
        self.results.setdefault("history", []).append({"epoch": epoch, **scalars(metrics, "")})
        self.tracker.log(scalars(metrics, "val/"), step=p.step)
        log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4f}" for k, v in scalars(metrics, "").items()))
        if p.best is None or metrics[monitor] > p.best:
            p.best, p.best_epoch, p.stale_epochs = metrics[monitor], epoch, 0
            self.results["trained"] = {**metrics, "checkpoint": {"path": "checkpoints/best.pt", "epoch": epoch}}
            self.save("best")
        else:
            p.stale_epochs += 1
        self.save("last")
        self.tracker.log({f"val/{monitor}_best": p.best}, step=p.step)
        if patience is not None and p.stale_epochs >= patience:
            log.info("early stop: no better %s for %d evaluations (best %.4f at epoch %d)", monitor, patience,
                     p.best, p.best_epoch)
            return True
        return False

    def embed_split(self, split: str) -> torch.Tensor:
        """Embeddings of every record of ``split``, in order, on the CPU, on every rank (each embeds a
        contiguous share); both modules in eval mode. Never augmented."""
        self.backbone.eval()
        with autocast(self.device, self.cfg.precision):
            if self.features is not None:
                mine = embed_features(self.head, self.shard(self.features[split]),
                                      self.cfg.embed_batch_size, self.device)
            else:
                mine = embed_records(self.backbone, self.head, self.data, split, self.shard(self.records[split]),
                                     self.cfg.embed_batch_size, self.device)
        return distributed.gather_shards(mine, len(self.records[split]))

    def backbone_features(self, split: str) -> torch.Tensor:
        """The backbone's pooled features of ``split`` (no head), on every rank: those extracted for a
        frozen backbone, else one pass now (before training: the raw backbone's)."""
        if self.features is not None:
            return self.features[split]
        self.backbone.eval()
        with autocast(self.device, self.cfg.precision):
            return self._gathered(split)

    def score(self, embeddings: torch.Tensor) -> dict:
        """Retrieval metrics of validation embeddings (of ``trainer.eval_max_queries`` seeded queries, the
        same ones every epoch), per-class results keyed by class name: computed on rank 0, received by
        every rank (so every rank takes the same decisions)."""
        metrics = None
        if self.main_process:
            metrics = with_class_names(retrieval_metrics(embeddings, self.labels["val"], len(self.label_map),
                                                         self.cfg.eval_max_queries, self.cfg.seed),
                                       list(self.label_map))
        return distributed.broadcast_object(metrics)

    def evaluate(self) -> dict:
        """Retrieval metrics of the validation split from the model as it is now, which every rank holds
        alike (buffers averaged first)."""
        distributed.average_buffers([self.head, self.loss_fn])
        return self.score(self.embed_split("val"))

    def save(self, name: str) -> Path:
        """checkpoints/<name>.pt (rank 0 writes it, with every rank's RNG state); returns its path."""
        path = self.output_dir / "checkpoints" / f"{name}.pt"
        rng = distributed.gather_objects(rng_state())
        if self.main_process:
            save_checkpoint(path, head=cpu_state(self.head), backbone_trainable=self.backbone.trainable_state_dict(),
                            loss=cpu_state(self.loss_fn), optimizer=self.optimizer.state_dict(),
                            scheduler=self.scheduler.state_dict(), sampler=self.sampler_state, rng=rng,
                            results=self.results, label_map=self.label_map, config=self.config,
                            **self.progress.to_dict())
        return path

    def resume(self, saved: dict, source: str) -> None:
        """Continue exactly where the checkpoint ``saved`` (read from ``source``) stopped: weights, optimizer,
        schedule, batches, every rank's RNG; its best checkpoint is carried into this run's dir."""
        if saved["label_map"] != self.label_map:
            raise ConfigError(f"ckpt_path={source}: its classes {list(saved['label_map'])} differ from "
                              f"this data's {list(self.label_map)}")
        self._load_weights(saved)
        self.loss_fn.load_state_dict(saved["loss"])
        self.optimizer.load_state_dict(saved["optimizer"])
        saved["scheduler"].pop("base_lrs")  # this run's learning rates win over the checkpoint's
        self.scheduler.load_state_dict(saved["scheduler"])
        for group, base_lr, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                          self.scheduler.lr_lambdas):
            group["lr"] = base_lr * factor(self.scheduler.last_epoch)
        self.sampler_state = saved["sampler"]
        self.results.update(saved["results"])
        self.progress = Progress.from_checkpoint(saved)
        states = saved["rng"]
        if len(states) != self.world_size:
            log.warning("resume: the checkpoint was written by %d process(es), this run has %d: random draws "
                        "will not replay exactly", len(states), self.world_size)
        set_rng_state(states[self.rank] if len(states) == self.world_size else states[0])
        self._carry_best(source)
        log.info("resumed from %s at epoch %d, step %d", source, self.progress.epoch, self.progress.step)

    def _load_weights(self, saved: dict) -> None:
        self.head.load_state_dict(saved["head"])
        self.backbone.load_trainable_state_dict(saved["backbone_trainable"])

    def _carry_best(self, source: str) -> None:
        """Copy the resumed run's ``best.pt`` (beside ``source``) into this run's dir, so the best epoch
        so far keeps its checkpoint (rank 0)."""
        best_epoch, target = self.progress.best_epoch, self.output_dir / "checkpoints" / "best.pt"
        origin = Path(source).expanduser().with_name("best.pt")
        if not self.main_process or best_epoch == 0 or target.resolve() == origin.resolve():
            return
        try:
            epoch = read_checkpoint(origin, mmap=True)["epoch"]
        except (OSError, KeyError, UserError):
            epoch = None
        if epoch != best_epoch:
            log.warning("resume: no best.pt of epoch %d beside %s: this run writes checkpoints/best.pt when an "
                        "epoch beats that one", best_epoch, source)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(origin, tmp)
        os.replace(tmp, target)
        log.info("resume: carried over the best checkpoint (epoch %d) from %s", best_epoch, origin)

    def _write_outputs(self) -> dict:
        """The final evaluation (charfeat.evaluation.final) of the best epoch's model next to the
        baselines: metrics.json, per_query.npz, suspects.jsonl, plots and report.html (rank 0 writes;
        every rank embeds). Returns the results (rank 0) or the trained and untrained rows."""
        p, best = self.progress, self.output_dir / "checkpoints" / "best.pt"
        distributed.barrier()  # rank 0 has written best.pt
        if p.best_epoch != p.epoch and best.is_file():
            self._load_weights(read_checkpoint(best))
        embeddings = self.embed_split("val")
        if not self.main_process:
            return {name: self.results[name] for name in ("trained", "untrained")}
        if best.is_file():
            self.tracker.log_checkpoint(best, name=f"{self.run_name}-best")
        split = SplitEmbeddings("val", self.records["val"], self.labels["val"], list(self.label_map), self.data,
                                rows={"trained": embeddings, **self.baselines},
                                subject=f"trained model, epoch {p.best_epoch} of {p.epoch}",
                                history=self.results.get("history", []),
                                model_info={"checkpoint": self.results["trained"]["checkpoint"]})
        return evaluate_split(self.output_dir, split, self.evaluation, self.cfg.plots, self.tracker)

def order(positions: list[int]) -> list[int]:
    """The permutation that puts rows listed at ``positions`` back in position order."""
    return sorted(range(len(positions)), key=positions.__getitem__)


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict on the CPU, for a checkpoint."""
    return {name: value.detach().cpu() for name, value in module.state_dict().items()}
