"""P×K batches: P classes, K images of each, so every anchor has positives and negatives.

The contract is pytorch-metric-learning's MPerClassSampler's (classes drawn uniformly, distinct
within a batch; K images per class, with replacement only for classes smaller than K), drawn in
time linear in the number of images: PML draws each class's K images with a choice without
replacement over the whole class, which costs the class's size per draw and makes an epoch
quadratic (30 s of sampling per epoch at 330,000 images). Here each class is shuffled once per
pass and dealt out K at a time. Added: a check, before any model is built, that the config can
be satisfied; exclusion of classes with a single image (their only positive would be the image
itself); a private, seeded RNG whose state is the whole sampler state (exact resume).
"""

import math
from collections import Counter
from typing import Iterator, Sequence

import numpy as np
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
        labels = np.asarray(labels, dtype=np.int64)
        classes, counts = np.unique(labels, return_counts=True)
        eligible = classes[counts >= 2]
        if len(eligible) < p * world_size:
            name = (lambda i: class_names[i]) if class_names else str
            per_class = ", ".join(f"{name(int(c))}: {n}" for c, n in zip(classes, counts))
            wanted = f"sampler.p={p}" if world_size == 1 else f"sampler.p={p} x {world_size} processes"
            raise SamplerConfigError(
                f"{wanted} but only {len(eligible)} class(es) have at least 2 training images "
                f"({per_class}); lower sampler.p or add data"
            )
        order = np.argsort(labels, kind="stable")  # indices grouped by class, in dataset order
        groups = np.split(order, np.cumsum(counts)[:-1])
        self.members = [group for group, n in zip(groups, counts) if n >= 2]  # one index array per class
        self.p, self.k, self.rank, self.world_size = p, k, rank, world_size
        global_batch = p * k * world_size
        images = sum(len(m) for m in self.members)
        self.num_batches = batches_per_epoch or max(1, math.ceil(images / global_batch))
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def state_dict(self) -> dict:
        """The RNG state (plain ints): an epoch is drawn from it alone, so restoring it replays the
        same batches from here on (exact resume)."""
        return {"rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self._rng.bit_generator.state = state["rng"]

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        picks = self._pick_classes()  # [batches, world_size * p] class positions
        images = self._deal(picks)  # [batches, world_size * p, k] dataset indices
        mine = images[:, self.rank * self.p:(self.rank + 1) * self.p]
        for batch in mine.reshape(self.num_batches, self.p * self.k):
            yield batch.tolist()

    def _pick_classes(self) -> np.ndarray:
        """Distinct classes for each global batch, uniformly: a partial Fisher–Yates shuffle of the
        class list per batch, O(world_size × p) each."""
        n_classes, width = len(self.members), self.p * self.world_size
        offsets = np.arange(width)
        swaps = offsets + (self._rng.random((self.num_batches, width)) * (n_classes - offsets)).astype(np.int64)
        order = np.arange(n_classes)
        picks = np.empty((self.num_batches, width), dtype=np.int64)
        for batch, targets in enumerate(swaps.tolist()):
            for slot, target in enumerate(targets):
                order[slot], order[target] = order[target], order[slot]
            picks[batch] = order[:width]
        return picks

    def _deal(self, picks: np.ndarray) -> np.ndarray:
        """K distinct images (K with replacement for a class smaller than K) for every pick: each
        class is shuffled once per pass and dealt out K at a time, O(class size + draws)."""
        k = self.k
        flat = picks.ravel()
        draws = np.bincount(flat, minlength=len(self.members))
        hands: list[np.ndarray] = []
        for members, needed in zip(self.members, draws.tolist()):
            if needed == 0:
                hands.append(np.empty((0, k), dtype=np.int64))
            elif len(members) < k:
                hands.append(members[self._rng.integers(0, len(members), size=(needed, k))])
            else:
                per_pass = len(members) // k  # the rest of a pass is left out, so a hand never repeats an image
                passes = [self._rng.permutation(members)[:per_pass * k] for _ in range(-(-needed // per_pass))]
                hands.append(np.concatenate(passes).reshape(-1, k)[:needed])
        # the j-th pick of a class (in batch order) gets that class's j-th hand
        by_class = np.argsort(flat, kind="stable")
        starts = np.concatenate([[0], np.cumsum(draws)[:-1]])
        nth = np.empty_like(flat)
        nth[by_class] = np.arange(len(flat)) - starts[flat[by_class]]
        dealt = np.concatenate(hands)[starts[flat] + nth]
        return dealt.reshape(*picks.shape, k)
