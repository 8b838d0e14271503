"""RNG state for exact resume: every generator a run draws from, CUDA devices included."""

import random

import numpy as np
import torch

from charfeat.training import state


class FakeCuda:
    """torch.cuda of a machine with two GPUs in use, as far as RNG state goes."""

    def __init__(self, monkeypatch):
        self.states = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3, 4], dtype=torch.uint8)]
        self.restored = {}
        for name, value in {"is_available": lambda: True, "is_initialized": lambda: True,
                            "device_count": lambda: 2, "get_rng_state_all": lambda: [s.clone() for s in self.states],
                            "set_rng_state": self.set_rng_state}.items():
            monkeypatch.setattr(torch.cuda, name, value)

    def set_rng_state(self, new_state, device):
        self.restored[device] = new_state


def test_cuda_rng_state_of_every_device_is_saved_and_restored(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    saved = state.rng_state()
    assert [s.tolist() for s in saved["cuda"]] == [[1, 2], [3, 4]]
    state.set_rng_state(saved)
    assert {device: s.tolist() for device, s in cuda.restored.items()} == {0: [1, 2], 1: [3, 4]}


def test_cpu_generators_replay_after_restore():
    saved = state.rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    state.set_rng_state(saved)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
