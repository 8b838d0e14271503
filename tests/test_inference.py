"""charfeat.inference.load_model: a saved run rebuilt from its checkpoint alone."""

import json

import pytest
import torch
from hydra.utils import instantiate

from charfeat.inference import embed_records, load_model
from charfeat.data.labels import encode_labels
from charfeat.evaluation.metrics import SCALAR_METRICS, retrieval_metrics
from trained_run import trained_run


def test_missing_checkpoint_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt does not exist"):
        load_model(tmp_path / "nothing.pt")


def test_directory_is_an_error_pointing_at_the_file(tmp_path):
    with pytest.raises(IsADirectoryError, match="pass the .pt file"):
        load_model(tmp_path)


def test_file_without_the_checkpoint_keys_is_rejected(tmp_path):
    torch.save({"head": {}}, tmp_path / "other.pt")
    with pytest.raises(KeyError, match="not a charfeat checkpoint"):
        load_model(tmp_path / "other.pt")


@pytest.fixture(scope="module")
def run_dir(cache_dir):
    return trained_run(cache_dir)


def embed_val(checkpoint):
    backbone, head, label_map, config = load_model(checkpoint, "cpu")
    assert not head.training and not backbone.training
    data = instantiate(config["data"])
    records = data.records("val")
    embeddings = embed_records(backbone, head, data, "val", records, config["trainer"]["embed_batch_size"],
                               torch.device("cpu"))
    labels = torch.tensor(encode_labels(records, label_map, "val"))
    return embeddings, labels, label_map


@pytest.mark.slow
def test_load_model_reproduces_the_training_runs_embeddings(run_dir):
    first, labels, label_map = embed_val(run_dir / "checkpoints" / "last.pt")
    second, _, _ = embed_val(run_dir / "checkpoints" / "last.pt")
    assert torch.equal(first, second)  # deterministic in fp32
    assert first.shape == (80, 128)
    torch.testing.assert_close(first.norm(dim=1), torch.ones(80))
    assert label_map == json.loads((run_dir / "label_mapping.json").read_text())

    trained = json.loads((run_dir / "metrics.json").read_text())["trained"]
    metrics = retrieval_metrics(first, labels, len(label_map))
    for name in SCALAR_METRICS:
        assert metrics[name] == pytest.approx(trained[name], abs=1e-6), name


@pytest.mark.slow
def test_every_saved_backbone_key_must_be_used(run_dir, tmp_path):
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    checkpoint["backbone_trainable"] = {"model.no_such_layer.weight": torch.zeros(2)}
    torch.save(checkpoint, tmp_path / "bad.pt")
    with pytest.raises(KeyError, match="model.no_such_layer.weight"):
        load_model(tmp_path / "bad.pt")
