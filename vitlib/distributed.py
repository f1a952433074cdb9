"""Data-parallel training with ``torchrun``: the process group, the model wrapper, reductions.

``torchrun --nproc_per_node=N -m vitlib.train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; each
process trains on its share of every global batch and DDP averages the gradients, so all hold
identical weights. Only rank 0 writes files. Without torchrun all of this is a no-op."""

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
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> DistInfo:
    """Join torchrun's process group (nccl on CUDA, gloo on CPU); on CUDA use GPU ``LOCAL_RANK``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo(0, 1, device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(int(os.environ["RANK"]), world_size, device)


def cleanup() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """``model`` in DistributedDataParallel for several processes, else itself; SyncBatchNorm on
    CUDA (global batch statistics), none on a CPU (no kernel): each process normalises its share."""
    if info.world_size == 1:
        return model
    on_cuda = info.device.type == "cuda"
    if on_cuda:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    match_conv_grad_layout(model)
    return DistributedDataParallel(model, device_ids=[info.device.index] if on_cuda else None)


def match_conv_grad_layout(model: nn.Module) -> None:
    """Give every conv weight's gradient its parameter's strides, as DDP's buckets have (else DDP
    warned "Grad strides do not match bucket view strides" every step): a CPU depthwise conv or a
    channels-last 1x1 weight gets another stride on a size-1 dimension, over the same memory."""
    for weight in (m.weight for m in model.modules() if isinstance(m, nn.Conv2d)):
        weight.register_hook(lambda grad, weight=weight: grad if grad.stride() == weight.stride()
                             else torch.empty_like(weight).copy_(grad))  # fmt: skip


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (nothing to do in a single one); returns it."""
    if dist.is_initialized():
        dist.all_reduce(tensor)  # the default op is SUM
    return tensor


def barrier() -> None:
    """Wait for every process (nothing to do in a single one)."""
    if dist.is_initialized():
        dist.barrier()
