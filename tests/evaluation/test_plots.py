"""charfeat.evaluation.plots: t-SNE map and nearest-neighbour grid, on made-up embeddings and after training."""

import numpy as np
import pytest
import torch
from PIL import Image

from charfeat.evaluation import plots
from charfeat.evaluation.plots import (CAPTION, COLOURS, DISPLAY_WIDTH, DPI, FONT_SIZE, TILE, confusion_heatmap,
                                       metric_curves, nearest_neighbours, neighbours_grid, pick_queries,
                                       sample_indices, tsne_plot)
from trained_run import trained_run


def clustered(n_per_class: int = 20, classes: int = 3, dim: int = 16, seed: int = 0):
    """Unit-length embeddings around one random centre per class, and their labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    embeddings = centres[labels] + torch.randn(len(labels), dim, generator=g)
    return torch.nn.functional.normalize(embeddings, dim=1), labels


def test_sample_indices_are_capped_sorted_distinct_and_seeded():
    assert sample_indices(5, 10).tolist() == [0, 1, 2, 3, 4]
    picked = sample_indices(1000, 100, seed=3)
    assert len(picked) == 100 and len(set(picked.tolist())) == 100
    assert (np.diff(picked) > 0).all()
    assert (picked == sample_indices(1000, 100, seed=3)).all()
    assert not (picked == sample_indices(1000, 100, seed=4)).all()


def test_tsne_plot_writes_a_png_drawn_for_the_report_width(tmp_path):
    embeddings, labels = clustered()
    path = tsne_plot(embeddings, labels, ["a", "b", "c"], tmp_path / "sub" / "tsne.png", max_points=40)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (2 * DISPLAY_WIDTH, 2 * DISPLAY_WIDTH)


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures the plot functions save, kept open for inspection."""
    figures = []

    def keep(fig, path):
        figures.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def texts(fig) -> list:
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def test_every_figure_is_titled_with_what_it_shows_and_readable_at_the_report_width(drawn, tmp_path):
    """Shown DISPLAY_WIDTH px wide, a figure of DISPLAY_WIDTH / 100 inches maps 1 pt to 100/72 px:
    8 pt and up is 11 px and up."""
    embeddings, labels = clustered()
    title = "trained model, epoch 3, val split"
    tsne_plot(embeddings, labels, ["a", "b", "c"], tmp_path / "t.png", max_points=40, title=title)
    confusion_heatmap([[5, 1, 0], [2, 3, 1], [0, 0, 6]], ["a", "b", "c"], tmp_path / "c.png", title)
    history = [{"epoch": e, **dict.fromkeys(plots_metrics(), 0.1 * e)} for e in (1, 2, 3)]
    metric_curves(history, {"chance": dict.fromkeys(plots_metrics(), 0.05)}, tmp_path / "m.png", title)
    assert len(drawn) == 3
    for fig in drawn:
        assert fig.get_figwidth() == pytest.approx(DISPLAY_WIDTH / 100)
        titles = [t.get_text() for t in texts(fig)]
        assert any(title in t for t in titles), titles
        sizes = {t.get_text(): t.get_fontsize() for t in texts(fig)}
        assert min(sizes.values()) >= 8, sizes
    assert DPI * DISPLAY_WIDTH / 100 == 2 * DISPLAY_WIDTH  # drawn at twice the size shown


def plots_metrics():
    from charfeat.evaluation.metrics import SCALAR_METRICS

    return SCALAR_METRICS


def test_queries_cycle_through_the_classes():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 1)
    queries = pick_queries(labels, 6)
    assert sorted(labels[queries].tolist()) == [0, 0, 0, 1, 1, 2]
    assert len(set(queries)) == 6 and queries == pick_queries(labels, 6)
    assert sorted(pick_queries(labels, 50)) == list(range(14))  # never more than there are items


def test_nearest_neighbours_leave_the_query_out_and_rank_by_cosine():
    embeddings = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.7, 0.7]]), dim=1)
    scores, index = nearest_neighbours(embeddings, [0], k=5)
    assert index.tolist() == [[1, 3, 2]]
    assert scores[0].tolist() == sorted(scores[0].tolist(), reverse=True)
    assert scores[0, 0].item() == pytest.approx(float(embeddings[0] @ embeddings[1]))


def test_neighbour_grid_frames_hits_green_and_misses_red(tmp_path):
    embeddings, labels = clustered(n_per_class=6)
    asked = []

    def load_images(index):
        asked.extend(index)
        return [Image.new("RGB", (40, 60), (200, 200, 200)) for _ in index]

    path = neighbours_grid(embeddings, labels, ["a", "b", "c"], load_images, tmp_path / "grid.png", queries=4, k=5,
                           title="trained model, epoch 1, val split")
    queries = pick_queries(labels, 4)
    _, neighbours = nearest_neighbours(embeddings, queries, 5)
    assert set(asked) == set(queries) | set(neighbours.flatten().tolist())  # only the images shown are read
    with Image.open(path) as grid:
        grid = grid.convert("RGB")
        header = grid.height - 4 * (TILE + CAPTION)
        assert grid.width == 6 * TILE and header > 0
        assert FONT_SIZE * DISPLAY_WIDTH / grid.width >= 11  # caption text at least 11 px when shown 560 px wide
        for row, q in enumerate(queries):
            y = header + row * (TILE + CAPTION) + 1
            assert grid.getpixel((1, y)) == COLOURS["query"]
            for col, n in enumerate(neighbours[row].tolist(), start=1):
                expected = COLOURS["correct" if labels[n] == labels[q] else "wrong"]
                assert grid.getpixel((col * TILE + 1, y)) == expected


@pytest.mark.slow
def test_training_writes_every_plot_of_the_val_split(cache_dir):
    plot_dir = trained_run(cache_dir) / "plots"
    for name in ("tsne.png", "neighbours.png", "confusion.png", "curves.png"):
        with Image.open(plot_dir / name) as image:
            assert image.format == "PNG" and image.width >= 2 * DISPLAY_WIDTH * 0.9


@pytest.mark.slow
def test_wandb_tracker_logs_images(tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from charfeat.config import WandbConfig

    Image.new("RGB", (8, 8), "red").save(tmp_path / "red.png")
    tracker = instantiate(OmegaConf.merge(OmegaConf.structured(WandbConfig), {"tags": []}), run_config={},
                          output_dir=str(tmp_path))  # logger=wandb as configured: offline
    tracker.log_images({"val/red": tmp_path / "red.png"})
    tracker.finish()
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/images/val/red_*.png"))
