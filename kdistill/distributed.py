"""Several processes, one run: torchrun (or any launcher that sets RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT) starts one process a device.

Every rank draws the same order of the data each epoch and takes its share of every global
batch (``batch_size`` in the recipe is the global batch). The student is wrapped in
DistributedDataParallel; the gradients of the objective's own modules (adapters, heads,
learned variances, some created lazily at the first step, which DDP cannot wrap) are
averaged after each backward pass in one coalesced all-reduce, the same average. Each loss term
is a mean over some kind of item (samples, labelled samples, tokens): the step counts them over
every rank's share (one all-reduce) and weights each share by its part of the count, times the
number of ranks that the average divides by. So a run on N processes follows the path of one
process with the same global batch, whatever the labels or response lengths each rank holds. A
rank whose share of a (tail) batch is empty runs the step on a stand-in that counts for
nothing, so that every rank takes part in every all-reduce. Rank 0 alone writes files and shows
progress.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


def init_from_env() -> bool:
    """Join the process group the environment describes (gloo on CPU, nccl on CUDA); True if
    this call created it (the caller then destroys it at the end)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def active() -> bool:
    """A process group is initialised (by torchrun, or by the caller), whatever its size."""
    return dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def local_share(index: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """This rank's share of a global batch of sample indices, and whether it counts. A batch of
    fewer samples than ranks leaves some ranks none: they get the whole batch as a stand-in,
    which does not count (its gradients are zeros), so that the model sees inputs of a size one
    process would see."""
    if world_size() <= 1:
        return index, True
    share = index[rank()::world_size()]
    return (share, True) if len(share) else (index, False)


def average_gradients(params: list[torch.Tensor]) -> None:
    """Average the gradients of ``params`` over the ranks (one all-reduce of a flat buffer)."""
    if world_size() <= 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world_size()
    for p, g in zip(params, _unflatten_dense_tensors(flat, grads)):
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)


def sum_tensor(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over the ranks (a new tensor; ``value`` itself on one process)."""
    if world_size() <= 1:
        return value
    total = value.clone()
    dist.all_reduce(total)
    return total


def from_main(value: float | None, device) -> float:
    """Rank 0's ``value`` on every rank (the others pass anything, e.g. None)."""
    if world_size() <= 1:
        return float(value)
    t = torch.tensor([float(value) if is_main() else 0.0], dtype=torch.float64,
                     device=device if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, 0)
    return float(t.item())
