"""The input pipeline (charfeat.data.loader): worker processes deliver exactly what the training
process would build itself, in order, from local files and from S3; batches never exceed the token
budget; an image over it is an error naming it; workers leave stop signals to the training process."""

import logging
import signal

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from charfeat.config import LocalDataConfig, S3DataConfig, build
from charfeat.data.loader import InputGroups, _quiet_worker, input_batches, worker_count
from charfeat.errors import ConfigError
from charfeat.features.extract import ExtractionStats, FeatureExtractor
from configured import tiny_backbone
from conftest import BUCKET

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_backbone(tmp_path_factory.mktemp("models") / "tiny", build_random="tiny")


def local(root, workers):
    return build(LocalDataConfig, root=str(root), num_workers=workers)


def groups_of(dataset):
    return [chunks for chunks in input_batches(dataset, CPU)]


def test_worker_count_is_the_setting_or_the_machine_less_one():
    assert worker_count(3) == 3 and worker_count(0) == 0
    assert 0 <= worker_count(None) <= 8


def test_workers_deliver_each_group_in_order_exactly_as_in_process(backbone, small_sample):
    records = build(LocalDataConfig, root=str(small_sample)).records("train")
    groups = [[0, 1, 2, 3], [5, 5, 9], [31, 30, 7, 8, 12]]  # a P×K batch may hold a record twice
    texts = [None] * len(records)
    made = {}
    for workers in (0, 2):
        dataset = InputGroups(local(small_sample, workers), "train", records, texts, groups, backbone.encoder,
                              max_size=3, max_tokens=None, keyed=True)
        made[workers] = groups_of(dataset)
    assert len(made[2]) == len(groups)
    for group, in_process, in_workers in zip(groups, made[0], made[2]):
        assert sorted(p for c in in_workers for p in c.positions) == list(range(len(group)))
        assert all(len(c.positions) <= 3 for c in in_workers)
        for a, b in zip(in_process, in_workers, strict=True):
            assert a.positions == b.positions and a.keys == b.keys
            for key in a.inputs:
                assert torch.equal(a.inputs[key], b.inputs[key]), key
    keys = {p: k for chunk in made[2][1] for p, k in zip(chunk.positions, chunk.keys)}
    assert keys[0] == keys[1] != keys[2]  # record 5 twice: one image, one key


def test_features_from_worker_processes_equal_those_built_in_process(backbone, small_sample):
    records = build(LocalDataConfig, root=str(small_sample)).records("train")
    features = {}
    for workers in (0, 2):
        features[workers] = FeatureExtractor(backbone, 4, CPU).extract(local(small_sample, workers), "train", records)
    assert torch.equal(features[0], features[2])


@pytest.mark.slow
def test_workers_read_s3_each_with_a_client_of_its_own(backbone, small_sample, uploaded, moto_server, make_proxy):
    proxy = make_proxy(latency=0.005)
    records = build(LocalDataConfig, root=str(small_sample)).records("train")
    s3 = build(S3DataConfig, bucket=BUCKET, root=str(small_sample), prefix=uploaded, endpoint_url=proxy.url,
               cache_dir=None, num_workers=2)
    from_s3 = FeatureExtractor(backbone, 4, CPU).extract(s3, "train", s3.records("train"))
    from_disk = FeatureExtractor(backbone, 4, CPU).extract(local(small_sample, 0), "train", records)
    assert torch.equal(from_s3, from_disk)
    assert s3._client is not None  # the up-front check's, in this process; the workers made their own


def test_batches_stay_within_the_token_budget_and_features_do_not_change(backbone, small_sample):
    records = build(LocalDataConfig, root=str(small_sample)).records("train")
    data = local(small_sample, 0)
    whole = FeatureExtractor(backbone, 16, CPU).extract(data, "train", records)
    longest = max(backbone.sequence_length(image) for image in data.load_images("train", records))
    budget = 3 * longest
    backbone.max_tokens_per_batch = budget
    try:
        stats = ExtractionStats()
        cut = FeatureExtractor(backbone, 16, CPU).extract(data, "train", records, stats=stats)
    finally:
        backbone.max_tokens_per_batch = None
    torch.testing.assert_close(cut, whole, atol=1e-5, rtol=1e-5)
    assert stats.batches >= len(records) // 3
    assert stats.tokens <= budget * stats.batches


def test_an_image_over_the_token_budget_is_an_error_naming_it(backbone, small_sample):
    records = build(LocalDataConfig, root=str(small_sample)).records("train")
    dataset = InputGroups(local(small_sample, 0), "train", records, [None] * len(records), [[0, 1]],
                          backbone.encoder, max_size=2, max_tokens=10)
    with pytest.raises(ConfigError, match=rf"{records[0].filename}.*backbone.max_tokens_per_batch=10"):
        dataset[0]


def test_an_out_of_memory_batch_runs_again_in_halves(backbone, small_sample, caplog):
    records = build(LocalDataConfig, root=str(small_sample)).records("train")[:6]
    data = local(small_sample, 0)
    expected = FeatureExtractor(backbone, 6, CPU).extract(data, "train", records)
    real_pool, sizes = backbone.pool, []

    def pool_that_fits_three(**inputs):
        sizes.append(len(inputs["input_ids"]))
        if len(inputs["input_ids"]) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_pool(**inputs)

    backbone.pool = pool_that_fits_three
    try:
        with caplog.at_level(logging.WARNING):
            got = FeatureExtractor(backbone, 6, CPU).extract(data, "train", records)
    finally:
        del backbone.pool
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert sizes == [6, 3, 3] and "running it as two halves" in caplog.text


class _SignalHandlers(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return [signal.getsignal(signal.SIGINT) == signal.SIG_IGN, signal.getsignal(signal.SIGTERM) == signal.SIG_IGN]


def test_workers_leave_stop_signals_to_the_training_process():
    loader = DataLoader(_SignalHandlers(), batch_size=None, num_workers=1, worker_init_fn=_quiet_worker)
    assert [item for item in loader] == [[True, True], [True, True]]
    assert signal.getsignal(signal.SIGINT) != signal.SIG_IGN  # this process still handles them


def test_an_image_a_worker_cannot_read_is_an_error_naming_it_not_a_worker_traceback(backbone, small_sample, tmp_path):
    import shutil

    from charfeat.data.sources.base import ImageLoadError

    root = tmp_path / "copy"
    shutil.copytree(small_sample, root)
    data = local(root, 1)
    records = data.records("train")
    (root / "images" / records[5].filename).write_bytes(b"\xff\xd8\xff truncated")  # broken after the check
    dataset = InputGroups(data, "train", records, [None] * len(records), [[0, 1], [4, 5]], backbone.encoder,
                          max_size=2, max_tokens=None)
    with pytest.raises(ImageLoadError, match=records[5].filename) as raised:
        list(input_batches(dataset, CPU))
    assert "Traceback" not in str(raised.value) and "DataLoader worker" not in str(raised.value)


def test_token_batches_pack_sorted_lengths_under_both_limits():
    from charfeat.models.backbone.inputs import token_batches

    assert token_batches([10, 10, 20, 30, 30], max_size=4, max_tokens=60) == [[0, 1, 2], [3, 4]]
    assert token_batches([10, 10, 20, 30, 30], max_size=2, max_tokens=None) == [[0, 1], [2, 3], [4]]
    assert token_batches([10, 90], max_size=4, max_tokens=60) == [[0], [1]]  # too long alone: its own batch
