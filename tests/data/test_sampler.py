"""P×K batch sampler: corner cases listed by hand, as in open-metric-learning's tests."""

from collections import Counter

import pytest

from charfeat.config import PKSamplerConfig, build
from charfeat.data.sampler import SamplerConfigError


def test_batches_hold_p_classes_with_k_images_each():
    labels = [c for c in range(6) for _ in range(10)]
    sampler = build(PKSamplerConfig, p=4, k=3, batches_per_epoch=7)(labels, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 7
    for batch in batches:
        counts = Counter(labels[i] for i in batch)
        assert len(batch) == 12 and len(counts) == 4 and set(counts.values()) == {3}


def test_default_epoch_is_about_one_pass():
    labels = [c for c in range(4) for _ in range(25)]
    assert len(build(PKSamplerConfig, p=2, k=5)(labels, seed=0)) == 10


def test_seeded_and_reproducible():
    labels = [c for c in range(5) for _ in range(8)]
    first = list(build(PKSamplerConfig, p=3, k=2)(labels, seed=7))
    assert first == list(build(PKSamplerConfig, p=3, k=2)(labels, seed=7))
    assert first != list(build(PKSamplerConfig, p=3, k=2)(labels, seed=8))


def test_singleton_classes_never_appear():
    labels = [0] * 5 + [1] * 5 + [2] * 5 + [3]
    for batch in build(PKSamplerConfig, p=3, k=2, batches_per_epoch=20)(labels, seed=0):
        assert 15 not in batch


def test_class_smaller_than_k_is_sampled_with_replacement():
    labels = [0] * 2 + [1] * 10
    batches = list(build(PKSamplerConfig, p=2, k=4, batches_per_epoch=3)(labels, seed=0))
    assert all(sum(1 for i in b if labels[i] == 0) == 4 for b in batches)


@pytest.mark.parametrize(("labels", "p", "k", "message"), [
    ([0, 0, 1, 1, 2, 2], 4, 2, "sampler.p=4 but only 3 class(es) have at least 2 training images"),
    ([0, 0, 1, 2, 3], 2, 2, "sampler.p=2 but only 1 class(es)"),
    ([0, 0, 1, 1], 1, 2, "sampler.p=1: need at least 2 classes"),
    ([0, 0, 1, 1], 2, 1, "sampler.k=1: need at least 2 images"),
])
def test_impossible_configs_fail_with_reason(labels, p, k, message):
    with pytest.raises(SamplerConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build(PKSamplerConfig, p=p, k=k)(labels, seed=0)


def test_error_lists_class_counts_by_name():
    with pytest.raises(SamplerConfigError, match="Casual_Basic: 3, Street_Hip: 1"):
        build(PKSamplerConfig, p=2, k=2)([0, 0, 0, 1], seed=0, class_names=["Casual_Basic", "Street_Hip"])


def test_state_dict_replays_the_same_batches():
    labels = [c for c in range(5) for _ in range(6)]
    sampler = build(PKSamplerConfig, p=3, k=2)(labels, seed=3)
    list(sampler)  # one epoch: moves the RNG and PML's class order
    state = sampler.state_dict()
    expected = [list(sampler), list(sampler)]
    replay = build(PKSamplerConfig, p=3, k=2)(labels, seed=99)
    replay.load_state_dict(state)
    assert [list(replay), list(replay)] == expected
