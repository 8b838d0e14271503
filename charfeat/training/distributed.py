"""Several processes under torchrun: one process group, rank 0 owns the outputs, the loss sees
the global batch.

Only the trainable parameters are kept in sync (broadcast once, gradients averaged at each
optimizer step). DDP would broadcast every parameter of a frozen multi-GB backbone at
construction and would need the head and backbone behind one module; averaging by hand costs
one all-reduce of the (small) trainable part.
"""

import os
import warnings
from contextlib import contextmanager

import torch
import torch.distributed as dist


def pick_device(name: str) -> torch.device:
    """``auto``: this process's GPU (LOCAL_RANK under torchrun) if there is one, else the CPU."""
    if name == "auto":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world_size, device


@contextmanager
def main_process_first():
    """Rank 0 runs the block first (generating data, building a model), then the others,
    which find its results on disk instead of racing to write them."""
    if active() and dist.get_rank() != 0:
        dist.barrier()
    yield
    if active() and dist.get_rank() == 0:
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def gather_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's batch, in rank order, so miners and losses see the global batch.

    The gather is differentiable: each rank's gradient reaches its own embeddings (summed over
    the ranks' identical loss computations), and ``average_gradients`` then divides by the
    world size, which gives exactly the single-process gradient of the global batch.
    """
    if not active():
        return embeddings, labels
    from torch.distributed.nn.functional import all_gather

    gathered_labels = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered_labels, labels.contiguous())
    with warnings.catch_warnings():  # deprecated in favour of a private API; still the differentiable one
        warnings.simplefilter("ignore", FutureWarning)
        gathered = all_gather(embeddings)
    return torch.cat(gathered), torch.cat(gathered_labels)


def broadcast_parameters(params: list[torch.Tensor]) -> None:
    if active():
        for param in params:
            dist.broadcast(param.data, src=0)


def average_gradients(params: list[torch.Tensor]) -> None:
    if active():
        world_size = dist.get_world_size()
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            dist.all_reduce(param.grad)
            param.grad /= world_size


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on any: stop decisions must be collective."""
    if not active():
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value)
    return bool(value.item())


def gather_shards(shard: torch.Tensor, total: int) -> torch.Tensor:
    """Rows ``rank::world`` computed on each rank -> all ``total`` rows in order, on every rank."""
    if not active():
        return shard
    world_size = dist.get_world_size()
    pieces = [None] * world_size
    dist.all_gather_object(pieces, shard.cpu())
    out = torch.empty(total, *shard.shape[1:], dtype=shard.dtype)
    for rank, piece in enumerate(pieces):
        out[rank::world_size] = piece
    return out
