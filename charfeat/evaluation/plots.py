"""Pictures of an embedding space and of its scores: a t-SNE map coloured by class, a
nearest-neighbour grid, the nearest-neighbour confusion as a heat map and the metrics per epoch.

Every plot is drawn to be shown 560 px wide (``DISPLAY_WIDTH``) at twice that resolution, so its
text stays readable there (about 11 px and up), and is titled with what it shows: which model
(and epoch) on which split. The embedding plots take unit-length embeddings (cosine = dot
product). scikit-learn and matplotlib are imported inside the functions that use them (Agg
backend, no display needed). Everything is deterministic: the points t-SNE sees (at most
``max_points``) and the grid's queries are drawn with a fixed seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

DISPLAY_WIDTH = 560  # px: how wide the run report shows each plot
DPI = 200  # matplotlib figures: inches = display px / 100, so points read as at 100 % zoom
TILE = 184  # pixels per image in the neighbour grid (6 tiles: 1104 px, shown at 560)
FONT_SIZE = 22
LINE = 26  # pixels per caption line
CAPTION = 3 * LINE + 8  # pixels of text under each tile: score and verdict, class name over two lines
BORDER = 6
COLOURS = {"query": (40, 90, 220), "correct": (30, 160, 60), "wrong": (210, 40, 40)}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return path


def sample_indices(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """All of range(n) when n <= max_points, else max_points of them, sorted, drawn with ``seed``."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def tsne_plot(embeddings: torch.Tensor, labels: torch.Tensor, class_names: list[str], path: str | Path,
              max_points: int = 1000, seed: int = 0, title: str = "") -> Path:
    """t-SNE of embeddings [N, D] in 2-D, one colour per class, saved as a PNG at ``path``; ``title``
    says what is shown (model, epoch, split).

    At most ``max_points`` points (a seeded sample) go in: 1,000 cost about 20 CPU-seconds.
    """
    from sklearn.manifold import TSNE

    plt = _pyplot()
    n = len(labels)
    if n < 3:
        raise ValueError(f"a t-SNE plot needs at least 3 embeddings, got {n}")
    index = sample_indices(n, max_points, seed)
    points = embeddings[index].detach().float().cpu().numpy()
    point_labels = labels[index].cpu().numpy()
    perplexity = min(30.0, (len(index) - 1) / 3)
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)

    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(DISPLAY_WIDTH / 100, DISPLAY_WIDTH / 100), layout="constrained")
    for c in np.unique(point_labels):
        mask = point_labels == c
        colour = cmap(int(c) % cmap.N) if len(class_names) <= 20 else plt.get_cmap("hsv")(c / len(class_names))
        ax.scatter(xy[mask, 0], xy[mask, 1], s=10, color=colour, label=class_names[int(c)], alpha=0.8)
    if len(class_names) <= 20:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, markerscale=1.5, frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    shown = f"{len(index)} of {n}" if len(index) < n else f"{n}"
    ax.set_title(f"t-SNE of {shown} embeddings by class" + (f"\n{title}" if title else ""), fontsize=10)
    return _save(fig, path)


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


def _wrap(text: str, font, width: int, lines: int) -> list[str]:
    """``text`` over at most ``lines`` lines of ``width`` px, broken after "_", " " or "-" where it can."""
    out, rest = [], text
    while rest and len(out) < lines:
        line = _fit(rest, font, width)
        if len(line) < len(rest) and len(out) < lines - 1:
            breaks = [line.rfind(c) for c in "_ -"]
            line = line[:max(breaks) + 1] if max(breaks) > 0 else line
        out.append(line)
        rest = rest[len(line):]
    return out


def font(size: int = FONT_SIZE):
    """Pillow's bundled FreeType font at ``size`` px (the same on every machine)."""
    return ImageFont.load_default(size=size)


def tile(image: Image.Image, colour: tuple, lines: list[str], text_font) -> Image.Image:
    """One grid cell: ``image`` fitted inside a frame of ``colour``, ``lines`` of text below it
    (the last line may wrap once)."""
    cell = Image.new("RGB", (TILE, TILE + CAPTION), "white")
    inner = TILE - 2 * BORDER
    scale = inner / max(image.size)  # small images are enlarged to fill the tile, large ones shrunk
    thumb = image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    ImageDraw.Draw(cell).rectangle([0, 0, TILE - 1, TILE - 1], fill=colour)
    cell.paste(thumb, (BORDER + (inner - thumb.width) // 2, BORDER + (inner - thumb.height) // 2))
    draw = ImageDraw.Draw(cell)
    texts = lines[:-1] + _wrap(lines[-1], text_font, TILE - 6, CAPTION // LINE - len(lines) + 1) if lines else []
    for row, line in enumerate(texts[:CAPTION // LINE]):
        draw.text((3, TILE + 2 + row * LINE), _fit(line, text_font, TILE - 6), fill=(0, 0, 0), font=text_font)
    return cell


def neighbours_grid(embeddings: torch.Tensor, labels: torch.Tensor, class_names: list[str],
                    load_images: Callable[[list[int]], list[Image.Image]], path: str | Path,
                    queries: int = 6, k: int = 5, seed: int = 0, title: str = "") -> Path:
    """One row per query: the query image, then its top-k neighbours with cosine score, framed green
    when the neighbour has the query's class and red otherwise. ``load_images(indices)`` gives the
    images of those items; ``title`` (model, epoch, split) heads the grid. Saved as a PNG at ``path``."""
    if len(labels) < 2:
        raise ValueError(f"a neighbour grid needs at least 2 embeddings, got {len(labels)}")
    query_index = pick_queries(labels, queries, seed)
    scores, neighbours = nearest_neighbours(embeddings, query_index, k)
    needed = sorted(set(query_index) | set(neighbours.flatten().tolist()))
    images = dict(zip(needed, load_images(needed)))
    text_font = font()
    k = neighbours.shape[1]
    heading = [title, f"each row: a query, then its {k} nearest by cosine (green: same class, red: other)"]
    header = LINE * len([h for h in heading if h]) + 8
    grid = Image.new("RGB", ((k + 1) * TILE, header + len(query_index) * (TILE + CAPTION)), "white")
    for row, line in enumerate(h for h in heading if h):
        ImageDraw.Draw(grid).text((6, 4 + row * LINE), _fit(line, text_font, grid.width - 12), fill=(0, 0, 0),
                                  font=text_font)
    for row, q in enumerate(query_index):
        y = header + row * (TILE + CAPTION)
        query_class = int(labels[q])
        grid.paste(tile(images[q], COLOURS["query"], ["query", class_names[query_class]], text_font), (0, y))
        for col, (score, n) in enumerate(zip(scores[row].tolist(), neighbours[row].tolist()), start=1):
            correct = int(labels[n]) == query_class
            lines = [f"{score:.3f} {'same' if correct else 'other'}", class_names[int(labels[n])]]
            grid.paste(tile(images[n], COLOURS["correct" if correct else "wrong"], lines, text_font), (col * TILE, y))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def confusion_heatmap(counts: list[list[int]], class_names: list[str], path: str | Path, title: str = "") -> Path:
    """The nearest-neighbour confusion (row: query class, column: its nearest neighbour's class) as
    a heat map of row shares, each cell annotated with its count when the classes fit."""
    plt = _pyplot()
    counts = np.asarray(counts, dtype=float)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    c = len(class_names)
    fig, ax = plt.subplots(figsize=(DISPLAY_WIDTH / 100, DISPLAY_WIDTH / 100 * 0.9), layout="constrained")
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.7, label="share of the row's queries")
    ticks = range(c)
    ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    if c <= 15:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if shares[i, j] > 0.6 else "black")
    ax.set_xlabel("nearest neighbour's class")
    ax.set_ylabel("query class")
    ax.set_title("nearest-neighbour confusion" + (f"\n{title}" if title else ""), fontsize=10)
    return _save(fig, path)


def metric_curves(history: list[dict], baselines: dict[str, dict], path: str | Path, title: str = "") -> Path:
    """Each scalar metric per epoch (``history``: [{"epoch": e, metric: value, ...}]), one panel per
    metric, with each baseline row (``baselines``: {row: {metric: value}}) as a dashed level."""
    from charfeat.evaluation.metrics import SCALAR_METRICS

    plt = _pyplot()
    fig, axes = plt.subplots(len(SCALAR_METRICS), 1, figsize=(DISPLAY_WIDTH / 100, 1.5 * len(SCALAR_METRICS)),
                             sharex=True, layout="constrained")
    epochs = [entry["epoch"] for entry in history]
    for ax, metric in zip(axes, SCALAR_METRICS):
        ax.plot(epochs, [entry[metric] for entry in history], marker="o", markersize=3, color="C0", label="trained")
        for i, (row, values) in enumerate(baselines.items(), start=1):
            ax.axhline(values[metric], linestyle="--", linewidth=1, color=f"C{i}", label=row)
        ax.set_ylabel(metric.replace("mean_average_precision_at_r", "MAP@R"), fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncols=len(baselines) + 1, loc="lower right")
    axes[-1].set_xlabel("epoch")
    fig.suptitle("validation metrics per epoch" + (f"\n{title}" if title else ""), fontsize=10)
    return _save(fig, path)


def tile_row(images: list[Image.Image], colours: list[tuple], captions: list[list[str]], title: str,
             path: str | Path) -> Path:
    """One row of framed, captioned tiles under a title line, drawn as the neighbour grid draws its
    rows (a query beside its hits, for charfeat.search); saved as a PNG at ``path``."""
    text_font = font()
    header = LINE + 8
    row = Image.new("RGB", (len(images) * TILE, header + TILE + CAPTION), "white")
    ImageDraw.Draw(row).text((6, 4), _fit(title, text_font, row.width - 12), fill=(0, 0, 0), font=text_font)
    for col, (image, colour, lines) in enumerate(zip(images, colours, captions)):
        row.paste(tile(image, colour, lines, text_font), (col * TILE, header))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    row.save(path)
    return path
