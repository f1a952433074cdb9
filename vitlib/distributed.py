"""Data-parallel training with ``torchrun``: process-group setup, model wrapping, reductions.

``torchrun --nproc_per_node=N -m vitlib.train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; each
process then trains on its shard of every batch (``DeviceLoader(rank=, world_size=)``) and
DistributedDataParallel averages the gradients, so all ranks hold identical weights. Only rank 0
writes metrics and checkpoints. Without torchrun everything here is a no-op (world size 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> DistInfo:
    """Join the process group if launched by torchrun (nccl on CUDA, gloo on CPU).

    On CUDA each process uses GPU ``LOCAL_RANK``; ``device`` is returned unchanged otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo(0, 1, 0, device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, device)


def cleanup() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """``model`` in DistributedDataParallel when world size > 1, else ``model`` itself.

    On CUDA, BatchNorm layers (the small model's stem) become SyncBatchNorm in place, keeping
    their parameters and buffers, so they normalise over the global batch as one process would.
    SyncBatchNorm has no CPU kernel: CPU ranks normalise over their own share of the batch."""
    if info.world_size == 1:
        return model
    if info.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    match_conv_grad_layout(model)
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def match_conv_grad_layout(model: nn.Module) -> None:
    """Give the gradient of every conv weight the parameter's strides.

    A gradient may differ from its parameter in the stride of a size-1 dimension: PyTorch's CPU
    depthwise convolution returns ``(k*k, 1, k, 1)`` for a ``(C, 1, k, k)`` weight of strides
    ``(k*k, k*k, k, 1)``, and a 1x1 weight kept channels-last (``--channels_last``) gets its
    gradient in the standard layout. Both count as contiguous, but DDP's gradient buckets have
    the parameter's strides, and DDP warned ``Grad strides do not match bucket view strides`` on
    every step. A hook copies each such gradient into the parameter's layout before DDP sees it
    (a comparison of strides when they already match)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            weight = module.weight
            weight.register_hook(
                lambda grad, weight=weight: (
                    grad
                    if grad.stride() == weight.stride()
                    else torch.empty_like(weight).copy_(grad)
                )
            )


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (no-op in a single process); returns it."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_initialized():
        dist.barrier()
