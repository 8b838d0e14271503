"""Suspect labels: items whose nearest neighbours mostly carry another label, for a labeller to re-check.

Each item's k nearest neighbours (from `metrics.query_results`, no new search) vote with their
labels, each weighted by softmax(cosine / TEMPERATURE) over the k, which gives the item a
neighbourhood estimate p(class) of its label. An item is a suspect when p(its own label) < 0.5:
most of the neighbours' weight is on other labels. Suspects are ranked by how confidently the
neighbours disagree, 1 - p(own label) (ties: the stronger single other label first), as
cleanlab's "self-confidence" ranking does with a classifier's probabilities. A mislabelled image
sits among images of its true class and comes first; an image that is merely hard sits among
several classes, its own included, and comes later.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from charfeat.data.records import Record

SUSPECTS = "suspects.jsonl"
# cosine / TEMPERATURE: a neighbour 0.05 closer in cosine weighs e (2.7) times as much. On the sample
# set with 10 % of the training labels flipped this put more of them in the top 2 x flipped than
# plain votes (14.0 against 12.75 of 24, mean of 4 draws).
TEMPERATURE = 0.05


def rank_suspects(labels: torch.Tensor, neighbours: torch.Tensor, scores: torch.Tensor, k: int) -> list[dict]:
    """labels [N], neighbours/scores [N, >=k] (best first) -> the suspects, most confident first:
    ``{"index", "suggested", "agreement" (p of its own label), "neighbours": [index, ...], "scores": [...]}``."""
    k = min(k, neighbours.shape[1])
    if k < 1:
        return []
    near, near_scores = neighbours[:, :k], scores[:, :k].float()
    weights = torch.softmax(near_scores / TEMPERATURE, dim=1)
    p = torch.zeros(len(labels), int(labels.max()) + 1).scatter_add_(1, labels[near], weights)
    own = p.gather(1, labels[:, None])[:, 0]
    other, suggested = p.scatter(1, labels[:, None], -1.0).max(1)
    suspects = torch.nonzero(own < 0.5).flatten().tolist()
    suspects.sort(key=lambda i: (float(own[i]), -float(other[i]), i))
    return [{"index": i, "suggested": int(suggested[i]), "agreement": float(own[i]),
             "neighbours": near[i].tolist(), "scores": near_scores[i].tolist()} for i in suspects]


def suspect_rows(suspects: list[dict], records: list[Record], class_names: list[str]) -> list[dict]:
    """What suspects.jsonl holds per suspect: rank, the item (id, file, label), the label its
    neighbours suggest, the weight of its own label among them, and each neighbour's id, file,
    label and cosine."""
    return [{
        "rank": rank, "id": records[s["index"]].id, "filename": records[s["index"]].filename,
        "label": records[s["index"]].label, "suggested_label": class_names[s["suggested"]],
        "agreement": round(s["agreement"], 4),
        "neighbours": [{"id": records[n].id, "filename": records[n].filename, "label": records[n].label,
                        "cosine": round(score, 4)} for n, score in zip(s["neighbours"], s["scores"])],
    } for rank, s in enumerate(suspects, start=1)]


def write_suspects(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
