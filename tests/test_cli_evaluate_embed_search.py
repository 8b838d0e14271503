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
    assert set(metrics) == {"model", "chance"}
    trained = json.loads((run_dir / "metrics.json").read_text())
    for name in SCALAR_METRICS:
        assert metrics["model"][name] == pytest.approx(trained["trained"][name], abs=1e-6), name
        assert metrics["chance"][name] == pytest.approx(trained["chance"][name], abs=1e-6), name
    assert metrics["model"]["per_class_precision_at_1"] == pytest.approx(trained["trained"]["per_class_precision_at_1"])
    assert metrics["model"]["nn_confusion"] == trained["trained"]["nn_confusion"]
    assert (out / "plots" / "tsne.png").is_file() and (out / "plots" / "neighbours.png").is_file()
    assert "MAP@R" in result.stdout + result.stderr  # the table


@pytest.mark.slow
def test_evaluate_names_a_missing_checkpoint(cache_dir, tmp_path):
    result = run_module("charfeat.evaluate", ["checkpoint=no/such.pt", "hydra.run.dir=ev"], tmp_path, cache_dir)
    assert result.returncode != 0
    assert "checkpoint no/such.pt does not exist" in result.stderr


@pytest.mark.slow
def test_embed_writes_one_row_per_item(embedded, run_dir):
    embeddings = np.load(embedded / "embeddings.npy")
    items = [json.loads(line) for line in (embedded / "items.jsonl").read_text().splitlines()]
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(items), 128) and len(items) == 80
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    label_map = json.loads((run_dir / "label_mapping.json").read_text())
    assert all(set(item) == {"id", "filename", "label"} and item["label"] in label_map for item in items)
    assert len({item["id"] for item in items}) == len(items)
    meta = json.loads((embedded / "index.json").read_text())
    assert meta["count"] == 80 and meta["dim"] == 128 and meta["split"] == "val"


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
    lines = result.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.split() == ["rank", "id", "label", "cosine"])):]
    assert len(table) == 4 and table[1].split()[:2] == ["1", item["id"]]


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
