"""P×K batches: P classes, K images of each, so every anchor has positives and negatives.

Wraps pytorch-metric-learning's MPerClassSampler and adds what it lacks: a check, before any
model is built, that the config can be satisfied; exclusion of classes with a single image
(their only positive would be the image itself); and a private, seeded RNG.
"""

import math
from collections import Counter
from typing import Iterator, Sequence

import numpy as np
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.utils import common_functions as pml_common
from torch.utils.data import Sampler


class SamplerConfigError(ValueError):
    """The P×K settings cannot be met by this training set."""


class PKBatchSampler(Sampler[list[int]]):
    """Yields lists of P*K dataset indices: K per class for P distinct classes.

    Corner cases, checked in the constructor: P < 2 (no negatives) or K < 2 (no positives);
    fewer than P classes with at least 2 images; classes with fewer than K images (kept,
    sampled with replacement, as PML does); singleton classes (left out of batches).
    """

    def __init__(self, labels: Sequence[int], p: int, k: int, batches_per_epoch: int | None = None,
                 seed: int = 0, class_names: Sequence[str] | None = None):
        if p < 2:
            raise SamplerConfigError(f"sampler.p={p}: need at least 2 classes per batch to have negatives")
        if k < 2:
            raise SamplerConfigError(f"sampler.k={k}: need at least 2 images per class to have positives")
        counts = Counter(int(label) for label in labels)
        eligible = sorted(label for label, n in counts.items() if n >= 2)
        if len(eligible) < p:
            name = (lambda i: class_names[i]) if class_names else str
            per_class = ", ".join(f"{name(label)}: {n}" for label, n in sorted(counts.items()))
            raise SamplerConfigError(
                f"sampler.p={p} but only {len(eligible)} class(es) have at least 2 training images "
                f"({per_class}); lower sampler.p or add data"
            )
        keep = set(eligible)
        self.indices = np.array([i for i, label in enumerate(labels) if int(label) in keep])
        self.batch_size = p * k
        self.num_batches = batches_per_epoch or max(1, math.ceil(len(self.indices) / self.batch_size))
        self._sampler = MPerClassSampler(
            [int(labels[i]) for i in self.indices], m=k, batch_size=self.batch_size,
            length_before_new_iter=self.num_batches * self.batch_size,
        )
        self._rng = np.random.RandomState(seed)

    def state_dict(self) -> dict:
        """RNG state and PML's class order (it shuffles that list in place): restoring both
        replays the same batches from here on (exact resume)."""
        return {"rng": self._rng.get_state(), "class_order": list(self._sampler.labels)}

    def load_state_dict(self, state: dict) -> None:
        self._rng.set_state(state["rng"])
        self._sampler.labels = list(state["class_order"])

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        saved, pml_common.NUMPY_RANDOM = pml_common.NUMPY_RANDOM, self._rng
        try:
            positions = list(iter(self._sampler))
        finally:
            pml_common.NUMPY_RANDOM = saved
        for start in range(0, len(positions), self.batch_size):
            yield self.indices[positions[start:start + self.batch_size]].tolist()
