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

from charfeat.errors import UserError


class SamplerConfigError(UserError, ValueError):
    """The P×K settings cannot be met by this training set."""


class PKBatchSampler(Sampler[list[int]]):
    """Yields lists of P*K dataset indices: K per class for P distinct classes.

    Corner cases, checked in the constructor: P < 2 (no negatives) or K < 2 (no positives);
    fewer than P classes with at least 2 images; classes with fewer than K images (kept,
    sampled with replacement, as PML does); singleton classes (left out of batches).

    With ``world_size`` processes, every rank draws the same global batch of world_size × P
    distinct classes and keeps its own P of them: no image is in two ranks' batches of a step.
    """

    def __init__(self, labels: Sequence[int], p: int, k: int, batches_per_epoch: int | None, seed: int,
                 class_names: Sequence[str] | None = None, rank: int = 0, world_size: int = 1):
        if p < 2:
            raise SamplerConfigError(f"sampler.p={p}: need at least 2 classes per batch to have negatives")
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise SamplerConfigError(f"sampler.batches_per_epoch={batches_per_epoch}: must be >= 1 (or null)")
        if k < 2:
            raise SamplerConfigError(f"sampler.k={k}: need at least 2 images per class to have positives")
        counts = Counter(int(label) for label in labels)
        eligible = sorted(label for label, n in counts.items() if n >= 2)
        if len(eligible) < p * world_size:
            name = (lambda i: class_names[i]) if class_names else str
            per_class = ", ".join(f"{name(label)}: {n}" for label, n in sorted(counts.items()))
            wanted = f"sampler.p={p}" if world_size == 1 else f"sampler.p={p} x {world_size} processes"
            raise SamplerConfigError(
                f"{wanted} but only {len(eligible)} class(es) have at least 2 training images "
                f"({per_class}); lower sampler.p or add data"
            )
        keep = set(eligible)
        self.indices = np.array([i for i, label in enumerate(labels) if int(label) in keep])
        self.batch_size = p * k
        self.rank = rank
        global_batch = self.batch_size * world_size
        self.num_batches = batches_per_epoch or max(1, math.ceil(len(self.indices) / global_batch))
        self._sampler = MPerClassSampler(
            [int(labels[i]) for i in self.indices], m=k, batch_size=global_batch,
            length_before_new_iter=self.num_batches * global_batch,
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
        global_batch = len(positions) // self.num_batches
        for start in range(0, len(positions), global_batch):
            mine = positions[start + self.rank * self.batch_size:start + (self.rank + 1) * self.batch_size]
            yield self.indices[mine].tolist()
