"""The three commands that use a trained model, run as a user runs them: evaluate, embed, search."""

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from charfeat.config import SampleDataConfig, build, register_configs
from charfeat.evaluation.metrics import SCALAR_METRICS
from trained_run import run_module, trained_run


def default_sample(cache_dir):
    """The directory of the sample set a default run trains on."""
    return build(SampleDataConfig, cache_dir=str(cache_dir / "sample_data")).root


@pytest.mark.parametrize("name", ["evaluate", "embed", "search"])
def test_primary_config_composes_and_rejects_unknown_keys(name):
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="charfeat.conf", version_base="1.3"):
            cfg = compose(name, overrides=["checkpoint=x.pt"])
            assert cfg.task_name == name and cfg.checkpoint == "x.pt"
            assert OmegaConf.is_missing(cfg, "index") == (name == "search")
            if name != "search":
                assert cfg.data is None  # the checkpoint's data unless an option is picked
                assert compose(name, overrides=["data=local", "data.root=/d"]).data.root == "/d"
            with pytest.raises(Exception, match="no_such_key"):
                compose(name, overrides=["no_such_key=1"])
    finally:
        GlobalHydra.instance().clear()


def test_a_data_config_saved_before_a_key_existed_still_builds(tmp_path):
    """A checkpoint's data config without data.group_field, on_leak, duplicate_threshold,
    verify_images and max_image_pixels (written before they existed) gets their schema defaults,
    and defaults that refer to the rest of the config resolve against the saved run's values."""
    from hydra.utils import instantiate

    from charfeat.config import with_schema_defaults

    data = {"_target_": "charfeat.data.sources.s3.S3Data", "root": str(tmp_path), "bucket": "b",
            "train_jsonl": "train.jsonl", "val_jsonl": "val.jsonl", "label_field": "fashion_style",
            "on_bad_record": "error", "drop_quality": ["Low"], "keep_unknown": False, "start_index": 0,
            "val_fraction": 0.1, "split_seed": 0}
    saved = {"data": data, "paths": {"cache_dir": str(tmp_path / "cache")}, "backbone": {"train": "frozen"}}
    cfg = with_schema_defaults(saved, "data")
    assert cfg.group_field is None and cfg.on_leak == "error" and cfg.duplicate_threshold == 0.97
    assert cfg.cache_dir == str(tmp_path / "cache" / "s3") and cfg.verify_images == "header"
    with instantiate(cfg) as source:
        assert source.leak_options["on_leak"] == "error"


@pytest.fixture(scope="module")
def run_dir(cache_dir):
    return trained_run(cache_dir)


@pytest.fixture(scope="module")
def embedded(run_dir, cache_dir, tmp_path_factory):
    """The output dir of `charfeat.embed` on the val split of the trained run."""
    out = tmp_path_factory.mktemp("embed") / "index"
    result = run_module("charfeat.embed", [f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}", f"hydra.run.dir={out}"],
                        out.parent, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_evaluate_reproduces_the_training_runs_val_metrics(run_dir, cache_dir, tmp_path):
    result = run_module("charfeat.evaluate", [f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}", "hydra.run.dir=ev"],
                        tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "ev"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"model", "backbone", "chance", "model_ci95", "backbone_ci95", "chance_ci95"}
    trained = json.loads((run_dir / "metrics.json").read_text())
    for name in SCALAR_METRICS:
        assert metrics["model"][name] == pytest.approx(trained["trained"][name], abs=1e-6), name
        for row in ("backbone", "chance"):
            assert metrics[row][name] == pytest.approx(trained[row][name], abs=1e-6), (row, name)
            assert metrics[f"{row}_ci95"][name] == pytest.approx(trained[f"{row}_ci95"][name], abs=1e-6)
    assert metrics["model"]["per_class_precision_at_1"] == pytest.approx(trained["trained"]["per_class_precision_at_1"])
    assert metrics["model"]["nn_confusion"] == trained["trained"]["nn_confusion"]
    for name in ("tsne", "neighbours", "confusion"):
        assert (out / "plots" / f"{name}.png").is_file()
    assert not (out / "plots" / "curves.png").exists()  # no epochs to plot
    assert (out / "report.html").is_file() and (out / "suspects.jsonl").is_file()
    table = (result.stdout + result.stderr).split("results of", 1)[1].splitlines()[1:5]
    assert table[0].split()[:3] == ["val:", "80", "images"] and table[0].split()[3:] == ["P@1", "R@5", "R@10", "MAP@R",
                                                                                       "R-prec"]
    assert [line.split()[0] for line in table[1:]] == ["model", "backbone", "chance"]
    assert "±" in table[1]


@pytest.mark.slow
def test_evaluate_names_a_missing_checkpoint(cache_dir, tmp_path):
    result = run_module("charfeat.evaluate", ["checkpoint=no/such.pt", "hydra.run.dir=ev"], tmp_path, cache_dir)
    assert result.returncode != 0
    assert "checkpoint no/such.pt does not exist" in result.stderr


@pytest.mark.slow
def test_embed_writes_one_row_per_item_of_both_splits(embedded, run_dir, cache_dir):
    embeddings = np.load(embedded / "embeddings.npy")
    items = [json.loads(line) for line in (embedded / "items.jsonl").read_text().splitlines()]
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(items), 128) and len(items) == 240 + 80
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    label_map = json.loads((run_dir / "label_mapping.json").read_text())
    assert all(set(item) == {"id", "filename", "label", "split", "location"} and item["label"] in label_map
               for item in items)
    assert [item["split"] for item in items] == ["train"] * 240 + ["val"] * 80  # split=all: train, then val
    images = default_sample(cache_dir).resolve() / "images"
    assert all(item["location"] == str(images / item["filename"]) for item in items)  # absolute paths
    assert len({item["id"] for item in items}) == len(items)
    meta = json.loads((embedded / "index.json").read_text())
    assert meta["count"] == 320 and meta["dim"] == 128 and meta["split"] == "all"


@pytest.mark.slow
def test_search_finds_the_query_image_itself_first(embedded, run_dir, cache_dir, tmp_path):
    item = json.loads((embedded / "items.jsonl").read_text().splitlines()[7])
    query = default_sample(cache_dir) / "images" / item["filename"]
    result = run_module("charfeat.search", [f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}", f"index={embedded}",
                                            f"query={query}", "k=3", "hydra.run.dir=s"], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    hits = json.loads((tmp_path / "s" / "results.json").read_text())["hits"]
    assert [hit["rank"] for hit in hits] == [1, 2, 3]
    assert hits[0]["id"] == item["id"] and hits[0]["label"] == item["label"]
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[1]["score"] < hits[0]["score"]
    assert "faiss" not in result.stdout + result.stderr  # library chatter goes to the log file only
    assert "[faiss.loader][INFO]" in (tmp_path / "s" / "search.log").read_text()
    lines = result.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.split() == ["rank", "cosine", "label", "location"])):]
    assert len(table) == 4 and table[1].split() == ["1", "1.0000", item["label"], item["location"]]
    from PIL import Image

    from charfeat.evaluation.plots import TILE

    with Image.open(tmp_path / "s" / "results.png") as picture:  # the query, then its 3 hits
        assert picture.width == 4 * TILE and picture.height > TILE


@pytest.mark.slow
def test_embed_a_bare_image_folder(embedded, run_dir, cache_dir, tmp_path):
    """data=folder: no metadata, no labels; the same images embed to the same vectors."""
    import shutil

    items = [json.loads(line) for line in (embedded / "items.jsonl").read_text().splitlines()][:5]
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    for item in items:
        shutil.copy(default_sample(cache_dir) / "images" / item["filename"], folder / item["filename"])
    result = run_module("charfeat.embed", [f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}", "data=folder",
                                           f"data.root={tmp_path / 'photos'}", "hydra.run.dir=f"], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "f" / "items.jsonl").read_text().splitlines()]
    assert [row["filename"] for row in rows] == [f"nested/{item['filename']}" for item in sorted(items, key=lambda i: i["filename"])]
    assert all(row["label"] is None for row in rows)
    by_name = {item["filename"]: i for i, item in enumerate(
        json.loads(line) for line in (embedded / "items.jsonl").read_text().splitlines())}
    ours = np.load(tmp_path / "f" / "embeddings.npy")
    theirs = np.load(embedded / "embeddings.npy")[[by_name[row["filename"].split("/")[1]] for row in rows]]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_folder_data_cannot_be_trained_on(compose_cfg, tmp_path):
    from charfeat.train import train

    (tmp_path / "imgs").mkdir()
    with pytest.raises(ValueError, match="has no labels to train on"):
        train(compose_cfg("data=folder", f"data.root={tmp_path / 'imgs'}", "logger=none"))
