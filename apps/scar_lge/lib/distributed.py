"""Data-parallel training over several processes with PyTorch's own DistributedDataParallel (DDP).

Two ways in, as in MONAI Label and nnU-Net: ``torchrun`` starts the ranks and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous (:func:`init_from_torchrun`, used by the default-model
script, on one node or several); or a process starts its own ranks on this machine
(:func:`spawn_ranks`, used by the server's train task, one per GPU). Ranks talk over NCCL on GPUs and
gloo on CPUs (gloo is how the tests run two ranks without a GPU).
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.distributed.elastic.utils.distributed import get_free_port

logger = logging.getLogger(__name__)


RANK_TIMEOUT = datetime.timedelta(hours=1)


def backend_for(device: str | torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def active() -> bool:
    """Whether this process is one rank of several."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, or the only process: the one that validates, writes checkpoints and publishes."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradient: d(sum_r x_r)/dx_r = 1 on every rank, and
    every rank's loss uses the sum. Written out because ``torch.distributed.nn.functional.all_reduce``, which
    does this, is deprecated in torch 2 and its replacement is private."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, differentiable: the gradient of each rank's input is the sum of all ranks' upstream
    gradients, so a loss computed from pooled sums backpropagates into every rank's own samples. The tensor
    itself when not distributed."""
    return _SumOverRanks.apply(tensor) if active() else tensor


def mean_over_ranks(value: float) -> float:
    """The mean of a number over ranks (epoch losses for the record); the number itself when not distributed."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return float(tensor.item()) / dist.get_world_size()


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher with its environment) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_torchrun(device: str) -> str:
    """Join the process group torchrun set up; returns this rank's device (``cuda:LOCAL_RANK`` on GPUs).

    Raises:
        RuntimeError: GPUs asked for but this node has fewer than its ranks.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.device(device).type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"rank with LOCAL_RANK {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                "start at most that many processes per node (--nproc-per-node)"
            )
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    # An hour, not NCCL's 10 minutes: rank 0 validates (and the script scores its held-out exams) while
    # the other ranks wait at the next collective.
    dist.init_process_group(backend_for(device), timeout=RANK_TIMEOUT)
    logger.info("rank %d of %d on %s (%s)", dist.get_rank(), dist.get_world_size(), device, dist.get_backend())
    return device


def _rank_entry(local_rank: int, world: int, port: int, device: str, parent: int, fn: Callable, args: tuple) -> None:
    # First of all: die with the process that spawned this rank (a cancelled run must not leave ranks that
    # go on and publish), and stop now if it is already gone.
    from .lifecycle import stop_with_parent  # noqa: PLC0415 (lifecycle imports MONAI Label's task utilities)

    stop_with_parent()
    if os.getppid() != parent:
        raise RuntimeError("the process that started this rank is gone")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank))
    os.environ.update(WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank))
    rank_device = init_from_torchrun(device)
    try:
        fn(rank_device, *args)
    finally:
        dist.destroy_process_group()


def spawn_ranks(world: int, device: str, fn: Callable, *args) -> None:
    """Run ``fn(rank_device, *args)`` in ``world`` new processes on this machine, as one DDP group.

    Processes are started with the ``spawn`` method (a fresh interpreter each: CUDA cannot be used in a
    forked child of a process that touched it), so ``fn`` and ``args`` must be picklable. The rendezvous is
    on the loopback only. Raises if any rank fails (``torch.multiprocessing.ProcessRaisedException``).
    """
    torch.multiprocessing.spawn(
        _rank_entry, args=(world, get_free_port(), device, os.getpid(), fn, args), nprocs=world, join=True
    )
