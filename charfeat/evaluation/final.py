"""The evaluation that ends a run (training's, or `charfeat.evaluate`'s) and everything it writes.

Given one split's embeddings per row (the model's first, then the baselines it has), it scores
every row with intervals and the exact chance row, and writes into the run's output dir:
metrics.json, per_query.npz, suspects.jsonl, plots/*.png (unless plots are off) and report.html;
a tracker, when given, gets the plots and every row's metrics with their interval ends.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charfeat.data.records import Record
from charfeat.data.sources.base import DataSource
from charfeat.evaluation import plots
from charfeat.evaluation.per_query import PER_QUERY, write_per_query
from charfeat.evaluation.report import RunReport, write_run_report
from charfeat.evaluation.results import rounded, rows, tracked, write_metrics
from charfeat.evaluation.scoring import CHANCE, Scores, score_rows
from charfeat.evaluation.suspects import SUSPECTS, rank_suspects, suspect_rows, write_suspects

log = logging.getLogger(__name__)

MEANING = {"trained": "the trained model", "model": "the checkpoint's model",
           "untrained": "the same backbone with the head as initialised, before training",
           "backbone": "the backbone's pooled features, no head (the honest baseline)",
           CHANCE: "the expected value under a random ranking of the gallery, on the same queries"}
THUMBNAIL = 144  # px, shown at 72
SHOWN_SUSPECTS = 20
# Thumbnails made in this process, by image identity: the jobs of a sweep show mostly the same
# suspects, each a full decode of a photo. Emptied past MAX_THUMBNAILS (about 8 KB each).
_THUMBNAILS: dict[str, bytes] = {}
MAX_THUMBNAILS = 4096


@dataclass
class SplitEmbeddings:
    """One split, embedded: ``rows`` maps row name -> embeddings [N, D] in the records' order (the
    model's row first); ``subject`` says what that model is ("trained model, epoch 10");
    ``history``: per-epoch metrics of training ([{"epoch": e, metric: value}]), when there is one;
    ``model_info``: entries added to the model's row in metrics.json (training: which checkpoint it is)."""

    split: str
    records: list[Record]
    labels: torch.Tensor
    class_names: list[str]
    data: DataSource
    rows: dict[str, torch.Tensor]
    subject: str
    history: list[dict] = field(default_factory=list)
    model_info: dict = field(default_factory=dict)

    @property
    def title(self) -> str:
        return f"{self.subject}, {self.split} split"


def evaluate_split(out_dir: Path, split: SplitEmbeddings, eval_cfg, plots_on: bool, tracker=None) -> dict:
    """Score, write every output (see the module's doc) and return metrics.json's content."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = score_rows(split.rows, split.labels, split.class_names, eval_cfg.bootstrap, eval_cfg.seed,
                        keep=max(eval_cfg.suspects_k, 5))
    results = rounded(scores.results)
    results[next(iter(split.rows))].update(split.model_info)
    write_metrics(out_dir / "metrics.json", results)
    ids = [r.id for r, ok in zip(split.records, scores.answerable.tolist()) if ok]
    write_per_query(out_dir / PER_QUERY, ids, scores.per_query)
    model = scores.queries[next(iter(split.rows))]
    suspects = suspect_rows(rank_suspects(model.labels, model.neighbours, model.scores, eval_cfg.suspects_k),
                            split.records, split.class_names)
    write_suspects(out_dir / SUSPECTS, suspects)
    log.info("%d suspect label(s) in %s (neighbours mostly of another class)", len(suspects), out_dir / SUSPECTS)
    images = save_plots(out_dir / "plots", split, scores) if plots_on else {}
    write_run_report(out_dir / "report.html", RunReport(
        heading=split.title, notes=_notes(split, scores, eval_cfg), results=results,
        class_names=split.class_names, counts=torch.bincount(split.labels, minlength=len(split.class_names)).tolist(),
        plots={caption: path for caption, path in images.values()}, suspects=suspects,
        thumbnails=thumbnails(split, suspects[:SHOWN_SUSPECTS])))
    if tracker is not None:
        tracker.log_images({f"{split.split}/{name}": path for name, (_, path) in images.items()})
        tracker.summarize(tracked(results))
    return results


def _notes(split: SplitEmbeddings, scores: Scores, eval_cfg) -> list[str]:
    answerable = int(scores.answerable.sum())
    intervals = (f"{eval_cfg.bootstrap} bootstrap resamples of the queries (seed {eval_cfg.seed})"
                 if eval_cfg.bootstrap else "no intervals (eval.bootstrap=0)")
    return [f"{len(split.records)} {split.split} images, {answerable} answerable queries (a class with a "
            f"single image cannot be answered); {intervals}.",
            "Rows: " + "; ".join(f"{row}: {MEANING.get(row, row)}" for row in rows(scores.results)) + "."]


def save_plots(plot_dir: Path, split: SplitEmbeddings, scores: Scores) -> dict[str, tuple[str, Path]]:
    """{name: (caption, path)}: t-SNE, neighbour grid and confusion heat map of the model's row,
    and the metric curves when there is a history."""
    model = next(iter(split.rows))
    embeddings, title = split.rows[model], split.title
    out = {
        "tsne": (f"t-SNE: {title}", plots.tsne_plot(embeddings, split.labels, split.class_names,
                                                     plot_dir / "tsne.png", title=title)),
        "neighbours": (f"nearest neighbours: {title}", plots.neighbours_grid(
            embeddings, split.labels, split.class_names,
            lambda index: split.data.load_images(split.split, [split.records[i] for i in index]),
            plot_dir / "neighbours.png", title=title)),
        "confusion": (f"nearest-neighbour confusion: {title}", plots.confusion_heatmap(
            scores.results[model]["nn_confusion"]["counts"], split.class_names, plot_dir / "confusion.png", title)),
    }
    if split.history:
        baselines = {row: scores.results[row] for row in rows(scores.results) if row != model}
        out["curves"] = (f"validation metrics per epoch: {split.subject}", plots.metric_curves(
            split.history, baselines, plot_dir / "curves.png", f"{split.subject}, {split.split} split"))
    return out


def thumbnails(split: SplitEmbeddings, suspects: list[dict]) -> dict[str, bytes]:
    """JPEG thumbnails of the shown suspects and their neighbours, by filename; an unchanged image
    (the same identity) shown before in this process is not read again."""
    names = list(dict.fromkeys(name for s in suspects for name in
                               [s["filename"], *(n["filename"] for n in s["neighbours"][:5])]))
    by_name = {r.filename: r for r in split.records}
    keys = {name: key for name in names if (key := split.data.identity(split.split, name)) is not None}
    out = {name: _THUMBNAILS[keys[name]] for name in names if keys.get(name) in _THUMBNAILS}
    todo = [name for name in names if name not in out]
    if len(_THUMBNAILS) + len(todo) > MAX_THUMBNAILS:
        _THUMBNAILS.clear()
    for name, image in zip(todo, split.data.load_images(split.split, [by_name[n] for n in todo]) if todo else []):
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        out[name] = buffer.getvalue()
        if name in keys:
            _THUMBNAILS[keys[name]] = out[name]
    return {name: out[name] for name in names}
