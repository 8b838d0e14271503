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


def test_no_image_twice_in_a_batch_and_every_image_dealt_before_any_repeats():
    labels = [c for c in range(4) for _ in range(9)]  # 9 images per class, K=4: 2 hands per pass
    sampler = build(PKSamplerConfig, p=2, k=4, batches_per_epoch=8)(labels, seed=5)
    seen: dict[int, list[int]] = {}
    for batch in sampler:
        assert len(set(batch)) == len(batch)
        for i in batch:
            seen.setdefault(labels[i], []).append(i)
    for images in seen.values():
        for start in range(0, len(images) - 7, 8):  # each pass deals 8 distinct images of the class
            assert len(set(images[start:start + 8])) == 8


def test_classes_are_drawn_uniformly():
    labels = [0] * 300 + [1] * 10 + [2] * 10 + [3] * 10  # one class is 90 % of the images
    sampler = build(PKSamplerConfig, p=2, k=2, batches_per_epoch=2000)(labels, seed=0)
    counts = Counter(labels[batch[0]] for batch in sampler) + Counter(labels[batch[2]] for batch in sampler)
    assert all(abs(n / 4000 - 0.25) < 0.03 for n in counts.values())


def test_ranks_split_one_global_batch():
    labels = [c for c in range(8) for _ in range(6)]
    ranks = [build(PKSamplerConfig, p=2, k=3)(labels, seed=4, rank=r, world_size=3) for r in range(3)]
    for step in zip(*ranks):
        classes = [{labels[i] for i in batch} for batch in step]
        assert all(len(c) == 2 for c in classes) and len(set().union(*classes)) == 6
        assert len(set().union(*map(set, step))) == 18


def test_state_is_plain_data():
    import json

    sampler = build(PKSamplerConfig, p=2, k=2)([0, 0, 1, 1, 2, 2], seed=1)
    assert json.loads(json.dumps(sampler.state_dict())) == sampler.state_dict()
