"""Pictures of an embedding space: a t-SNE map coloured by class and a nearest-neighbour grid.

Both take embeddings of unit length (cosine similarity = dot product) and write a PNG.
scikit-learn and matplotlib are imported inside the functions that use them (Agg backend, no
display needed). Everything is deterministic: the points t-SNE sees (at most ``max_points``) and
the grid's queries are drawn with a fixed seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

TILE = 112  # pixels per image in the neighbour grid
CAPTION = 30  # pixels of text under each tile
BORDER = 4
COLOURS = {"query": (40, 90, 220), "correct": (30, 160, 60), "wrong": (210, 40, 40)}


def sample_indices(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """All of range(n) when n <= max_points, else max_points of them, sorted, drawn with ``seed``."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def tsne_plot(embeddings: torch.Tensor, labels: torch.Tensor, class_names: list[str], path: str | Path,
              max_points: int = 1000, seed: int = 0, title: str = "") -> Path:
    """t-SNE of embeddings [N, D] in 2-D, one colour per class, saved as a PNG at ``path``.

    At most ``max_points`` points (a seeded sample) go in: 1,000 cost about 20 CPU-seconds.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from sklearn.manifold import TSNE

    n = len(labels)
    if n < 3:
        raise ValueError(f"a t-SNE plot needs at least 3 embeddings, got {n}")
    index = sample_indices(n, max_points, seed)
    points = embeddings[index].detach().float().cpu().numpy()
    point_labels = labels[index].cpu().numpy()
    perplexity = min(30.0, (len(index) - 1) / 3)
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)

    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
    for c in np.unique(point_labels):
        mask = point_labels == c
        colour = cmap(int(c) % cmap.N) if len(class_names) <= 20 else plt.get_cmap("hsv")(c / len(class_names))
        ax.scatter(xy[mask, 0], xy[mask, 1], s=14, color=colour, label=class_names[int(c)], alpha=0.8)
    if len(class_names) <= 20:
        ax.legend(loc="best", fontsize=8, markerscale=1.5)
    ax.set_xticks([])
    ax.set_yticks([])
    shown = f"{len(index)} of {n}" if len(index) < n else f"{n}"
    ax.set_title(f"{title + ': ' if title else ''}t-SNE of {shown} embeddings")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def pick_queries(labels: torch.Tensor, count: int, seed: int = 0) -> list[int]:
    """``count`` query indices spread over the classes: one per class in turn, in a seeded order."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist()
    by_class: dict[int, list[int]] = {}
    for i in order:
        by_class.setdefault(int(labels[i]), []).append(i)
    queries = []
    while len(queries) < min(count, len(labels)):
        for members in by_class.values():
            if members and len(queries) < count:
                queries.append(members.pop(0))
    return queries


def nearest_neighbours(embeddings: torch.Tensor, queries: list[int], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k cosine neighbours of each query among all other items: (scores [Q, k], indices [Q, k])."""
    embeddings = embeddings.detach().float().cpu()
    sims = embeddings[queries] @ embeddings.T
    sims[torch.arange(len(queries)), torch.tensor(queries)] = float("-inf")  # not itself
    return sims.topk(min(k, len(embeddings) - 1), dim=1)


def _fit(text: str, font, width: int) -> str:
    while text and font.getlength(text) > width:
        text = text[:-1]
    return text


def _tile(image: Image.Image, colour: tuple, lines: list[str], font) -> Image.Image:
    tile = Image.new("RGB", (TILE, TILE + CAPTION), "white")
    inner = TILE - 2 * BORDER
    thumb = image.convert("RGB").copy()
    thumb.thumbnail((inner, inner))
    ImageDraw.Draw(tile).rectangle([0, 0, TILE - 1, TILE - 1], fill=colour)
    tile.paste(thumb, (BORDER + (inner - thumb.width) // 2, BORDER + (inner - thumb.height) // 2))
    draw = ImageDraw.Draw(tile)
    for row, line in enumerate(lines):
        draw.text((2, TILE + 1 + row * 14), _fit(line, font, TILE - 4), fill=(0, 0, 0), font=font)
    return tile


def neighbours_grid(embeddings: torch.Tensor, labels: torch.Tensor, class_names: list[str],
                    load_images: Callable[[list[int]], list[Image.Image]], path: str | Path,
                    queries: int = 6, k: int = 5, seed: int = 0) -> Path:
    """One row per query: the query image, then its top-k neighbours with cosine score, framed green
    when the neighbour has the query's class and red otherwise. ``load_images(indices)`` gives the
    images of those items. Saved as a PNG at ``path``."""
    if len(labels) < 2:
        raise ValueError(f"a neighbour grid needs at least 2 embeddings, got {len(labels)}")
    query_index = pick_queries(labels, queries, seed)
    scores, neighbours = nearest_neighbours(embeddings, query_index, k)
    needed = sorted(set(query_index) | set(neighbours.flatten().tolist()))
    images = dict(zip(needed, load_images(needed)))
    font = ImageFont.load_default()
    header = 18
    k = neighbours.shape[1]
    grid = Image.new("RGB", ((k + 1) * TILE, header + len(query_index) * (TILE + CAPTION)), "white")
    ImageDraw.Draw(grid).text((4, 3), f"query | top-{k} by cosine: green = same class, red = other class",
                              fill=(0, 0, 0), font=font)
    for row, q in enumerate(query_index):
        y = header + row * (TILE + CAPTION)
        query_class = int(labels[q])
        grid.paste(_tile(images[q], COLOURS["query"], ["query", class_names[query_class]], font), (0, y))
        for col, (score, n) in enumerate(zip(scores[row].tolist(), neighbours[row].tolist()), start=1):
            correct = int(labels[n]) == query_class
            lines = [f"{score:.3f} {'correct' if correct else 'wrong'}", class_names[int(labels[n])]]
            grid.paste(_tile(images[n], COLOURS["correct" if correct else "wrong"], lines, font), (col * TILE, y))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def save_plots(out_dir: str | Path, embeddings: torch.Tensor, labels: torch.Tensor, class_names: list[str],
               data, split: str, records: list, title: str = "") -> dict[str, Path]:
    """``tsne.png`` and ``neighbours.png`` of one split's embeddings under ``out_dir``; returns
    {name: path}, ready for a tracker's ``log_images``. ``records`` are the split's records, in the
    embeddings' order; ``data`` is the data source that reads their images."""
    out_dir = Path(out_dir)
    title = title or split
    return {
        f"{split}/tsne": tsne_plot(embeddings, labels, class_names, out_dir / "tsne.png", title=title),
        f"{split}/neighbours": neighbours_grid(
            embeddings, labels, class_names, lambda index: data.load_images(split, [records[i] for i in index]),
            out_dir / "neighbours.png"),
    }


def tile_row(images: list[Image.Image], colours: list[tuple], captions: list[list[str]], title: str,
             path: str | Path) -> Path:
    """One row of framed, captioned tiles under a title line, drawn as the neighbour grid draws its
    rows (a query beside its hits, for charfeat.search); saved as a PNG at ``path``."""
    font = ImageFont.load_default()
    header = 18
    row = Image.new("RGB", (len(images) * TILE, header + TILE + CAPTION), "white")
    ImageDraw.Draw(row).text((4, 3), _fit(title, font, row.width - 8), fill=(0, 0, 0), font=font)
    for col, (image, colour, lines) in enumerate(zip(images, colours, captions)):
        row.paste(_tile(image, colour, lines, font), (col * TILE, header))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    row.save(path)
    return path
