"""Several processes under torchrun: one process group, rank 0 owns the outputs and the decisions,
the loss sees the global batch.

Only the trainable parameters are kept in sync (broadcast once, gradients averaged at each
optimizer step, in buckets: one all-reduce per ~25 MB, not one per tensor). DDP would broadcast
every parameter of a frozen multi-GB backbone at construction and would need the head and
backbone behind one module. Buffers (the head's BatchNorm statistics) are averaged before every
evaluation, so every rank holds the same model; metrics are computed once, on rank 0, and every
rank receives them, so early stopping and the best checkpoint are one decision for all.

The process group has gloo for CPU tensors and, where CUDA is available, NCCL for CUDA tensors:
it starts before the run's device is known (a resumed run takes it from the checkpoint's config),
and small control messages (flags, metrics, RNG states) always travel over gloo.
"""

import logging
import os
import warnings
from contextlib import contextmanager

import torch
import torch.distributed as dist

BUCKET_BYTES = 25 * 2**20  # DDP's default bucket size


def init() -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        # torch._inductor (imported by torch.use_deterministic_algorithms, among others) keeps
        # references to a process group that exists when it is first imported: destroy_process_group
        # then cannot stop gloo's worker threads, and one still releasing a collective's tensors as
        # the interpreter shuts down aborts the process ("terminate called without an active exception")
        import torch._inductor.config  # noqa: F401
        cuda = torch.cuda.is_available() and dist.is_nccl_available()
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world_size


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def pick_device(name: str) -> torch.device:
    """``auto``: this process's GPU if there is one, else the CPU; ``cuda``: this process's GPU.

    This process's GPU is ``cuda:<LOCAL_RANK>`` under torchrun, so ranks never share one;
    ``cuda:N`` names one GPU (a single process). ``charfeat.config.validate`` has checked the name.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(f"cuda:{local_rank()}" if name == "cuda" else name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def quiet_other_ranks(rank: int) -> None:
    """Under torchrun, only rank 0 logs below WARNING (one log stream, one set of epoch lines)."""
    if rank > 0:
        logging.getLogger().setLevel(logging.WARNING)


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


def barrier() -> None:
    if active():
        dist.barrier()


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


def buckets(tensors: list[torch.Tensor], max_bytes: int = BUCKET_BYTES) -> list[list[torch.Tensor]]:
    """Consecutive tensors of one dtype and device, grouped up to ``max_bytes`` (a larger tensor alone)."""
    groups: list[list[torch.Tensor]] = []
    size = 0
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        last = groups[-1] if groups else None
        if last and (last[0].dtype, last[0].device) == (tensor.dtype, tensor.device) and size + nbytes <= max_bytes:
            last.append(tensor)
            size += nbytes
        else:
            groups.append([tensor])
            size = nbytes
    return groups


def average_gradients(params: list[torch.Tensor]) -> None:
    """Every rank's gradients replaced by their mean: one all-reduce per bucket of flattened gradients."""
    if not active():
        return
    world_size = dist.get_world_size()
    for param in params:
        if param.grad is None:  # unused this step (a batch without images leaves the vision tower idle)
            param.grad = torch.zeros_like(param)
    for bucket in buckets([param.grad for param in params]):
        flat = torch.cat([grad.reshape(-1) for grad in bucket])
        dist.all_reduce(flat)
        flat /= world_size
        for grad, piece in zip(bucket, flat.split([grad.numel() for grad in bucket])):
            grad.copy_(piece.view_as(grad))


def average_buffers(modules: list[torch.nn.Module]) -> None:
    """Floating-point buffers (BatchNorm running statistics) averaged over the ranks, so every rank
    evaluates and saves the same model."""
    if not active():
        return
    buffers = [buffer for module in modules for buffer in module.buffers() if buffer.is_floating_point()]
    for bucket in buckets(buffers):
        flat = torch.cat([buffer.reshape(-1) for buffer in bucket])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        for buffer, piece in zip(bucket, flat.split([buffer.numel() for buffer in bucket])):
            buffer.copy_(piece.view_as(buffer))


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on any: stop decisions must be collective."""
    if not active():
        return flag
    value = torch.tensor([int(flag)])  # a CPU tensor: gloo
    dist.all_reduce(value)
    return bool(value.item())


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (picklable; what rank 0 decided)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not active():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def shard(items: list, rank: int, world_size: int) -> list:
    """This rank's contiguous share of ``items`` (the first ranks take one more when it does not divide):
    contiguous, so a store that reads ahead in record order (S3) reads what this rank uses next."""
    size, extra = divmod(len(items), world_size)
    start = rank * size + min(rank, extra)
    return items[start:start + size + (rank < extra)]


def gather_shards(piece: torch.Tensor, total: int) -> torch.Tensor:
    """The rows of `shard` computed on each rank -> all ``total`` rows in order, on every rank."""
    if not active():
        return piece
    pieces = gather_objects(piece.cpu())
    if sum(len(p) for p in pieces) != total:
        raise RuntimeError(f"gather_shards: the ranks computed {[len(p) for p in pieces]} rows, not {total}")
    return torch.cat(pieces)
