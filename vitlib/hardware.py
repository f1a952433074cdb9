"""What the machine offers a run: the device, the arithmetic precision, and the memory.

``resolve_device("auto")`` picks CUDA when present; ``autocast_dtype("auto", device)`` picks bf16
on GPUs with bf16 tensor cores, fp16 on older ones, nothing (fp32) on a CPU. ``memory_estimate``
measures what one training image costs and ``check_memory`` refuses a configuration that would
not fit, naming the flag to change, instead of letting the operating system kill the run.
"""

from __future__ import annotations

import copy
import os
import sys

import torch
from torch import nn

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
GIB = 2**30


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda if available else cpu; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` on GPUs with bf16 tensor cores (compute capability 8.0+),
    ``"fp16"`` (with loss scaling) on older ones such as Colab's T4, ``"fp32"`` elsewhere."""
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype ``torch.autocast`` runs in for ``precision`` on ``device``; None for fp32."""
    return AUTOCAST_DTYPES.get(resolve_precision(precision, device))


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """``torch.autocast`` to ``dtype`` on ``device``'s type; disabled (float32) when None."""
    return torch.autocast(device.type, dtype or torch.float32, enabled=dtype is not None)


def compiled(model: nn.Module, example: torch.Tensor, dtype: torch.dtype | None) -> nn.Module:
    """``torch.compile(model)``, compiled now by one step on ``example`` (a zero batch); on any
    failure (no compiler, unsupported platform) prints why and returns ``model``. The buffers
    (BatchNorm statistics) are put back, so a compiled run equals an eager one and resumes
    exactly. On a CPU the kernels read the thread count when they run (inductor's
    ``cpp.dynamic_threads``), so ``vitlib.cpu.CpuThreads`` can still change it."""
    options = {"cpp.dynamic_threads": True} if example.device.type == "cpu" else None
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    try:
        fast = torch.compile(model, options=options)
        with autocast(example.device, dtype):
            fast(example).float().sum().backward()
    except Exception as e:  # compilation fails in many backend-specific ways
        first_line = (str(e).strip().splitlines() or [""])[0]
        print(f"torch.compile failed ({type(e).__name__}: {first_line}); training eagerly",
              file=sys.stderr)  # fmt: skip
        fast = model
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    return fast


def available_memory(device: torch.device) -> int:
    """Bytes a new allocation can still get: free GPU memory, or on a CPU the operating system's
    ``MemAvailable`` (page cache included; elsewhere than Linux, all physical memory)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return int(dict(line.split(":", 1) for line in f)["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def activation_bytes_per_image(model: nn.Module, dtype: torch.dtype | None) -> int:
    """Bytes of the tensors autograd keeps for the backward pass, per training image: counted on
    the CPU over two 32x32 images through a copy of ``model`` (in ``dtype`` autocast if given)."""
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    probe = copy.deepcopy(model).to("cpu").train()  # a copy: BatchNorm statistics stay untouched
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with autocast(torch.device("cpu"), dtype):
            probe(torch.zeros(2, 3, 32, 32))
    return sum(saved.values()) // 2


def memory_estimate(model: nn.Module, batch_size: int, dtype: torch.dtype | None) -> int:
    """Bytes a training step needs: the saved activations of ``batch_size`` images, doubled for
    the transient buffers of the backward pass, plus weights, gradients and the two AdamW moments
    (4 float32 copies of every parameter)."""
    parameters = sum(p.numel() for p in model.parameters())
    return 2 * batch_size * activation_bytes_per_image(model, dtype) + 16 * parameters


def check_memory(model: nn.Module, batch_size: int, dtype: torch.dtype | None,
                 device: torch.device) -> None:  # fmt: skip
    """Raise MemoryError naming ``--batch_size`` when a training step of ``model`` would need
    more than ``device`` has available (the largest batch that would fit is suggested)."""
    needed, available = memory_estimate(model, batch_size, dtype), available_memory(device)
    if needed <= available:
        return
    fits = max(1, int(batch_size * available / needed))
    raise MemoryError(
        f"this run needs about {needed / GIB:.1f} GiB on {device} for batch_size={batch_size} "
        f"(activations of every image of a step), but {available / GIB:.1f} GiB is available: "
        f"pass --batch_size {fits} or smaller, or a smaller model (--model_overrides)"
    )
