"""What the machine offers a run: the device, the arithmetic precision, compilation, the memory
and, on a shared CPU, the cores other processes leave free."""

import copy
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
GIB = 2**30


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda if available else cpu; anything else as given."""
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(auto if name == "auto" else name)


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
    """``torch.compile(model)``, compiled now by a step on ``example`` (zeros), BatchNorm statistics
    put back; on failure, says why and returns ``model``. Threads stay dynamic (``CpuThreads``)."""
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
    """Bytes a new allocation can still get: free GPU memory; on Linux ``MemAvailable``, on other
    POSIX systems all physical memory, on Windows no limit (``os.sysconf`` is missing)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return int(dict(line.split(":", 1) for line in f)["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        sysconf = getattr(os, "sysconf", lambda name: 2**31)
        return sysconf("SC_PAGE_SIZE") * sysconf("SC_PHYS_PAGES")


def activation_bytes_per_image(model: nn.Module, dtype: torch.dtype | None) -> int:
    """Bytes of the tensors autograd keeps for the backward pass, per training image: counted on
    the CPU through a copy of ``model`` over two images of its size (in ``dtype`` autocast)."""
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    probe = copy.deepcopy(model).to("cpu").train()  # a copy: BatchNorm statistics stay untouched
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with autocast(torch.device("cpu"), dtype):
            size = getattr(getattr(model, "config", None), "image_size", 32)
            probe(torch.zeros(2, 3, size, size))
    return sum(saved.values()) // 2


def memory_estimate(model: nn.Module, batch_size: int, dtype: torch.dtype | None) -> int:
    """Bytes a training step needs: the saved activations of ``batch_size`` images, doubled for the
    backward pass's transient buffers, plus weight, gradient and AdamW's 2 moments (float32)."""
    parameters = sum(p.numel() for p in model.parameters())
    return 2 * batch_size * activation_bytes_per_image(model, dtype) + 16 * parameters


def check_memory(model: nn.Module, batch_size: int, dtype: torch.dtype | None,
                 device: torch.device) -> None:  # fmt: skip
    """A MemoryError naming the ``--batch_size`` that fits, before a step overflows ``device``."""
    needed, available = memory_estimate(model, batch_size, dtype), available_memory(device)
    if needed <= available:
        return
    fits = max(1, int(batch_size * available / needed))
    raise MemoryError(f"this run needs about {needed / GIB:.1f} GiB on {device} for batch_size="
                      f"{batch_size} (activations of every image of a step), but "
                      f"{available / GIB:.1f} GiB is available: pass --batch_size {fits} or "
                      "smaller, or a smaller model (--model_overrides)")  # fmt: skip


# Sharing the CPU: an OpenMP region waits for its slowest thread (docs/shared-cpu.md).
def busy_cpu_seconds(cores: set[int], stat: Path = Path("/proc/stat")) -> float | None:
    """CPU seconds all processes have spent busy on ``cores`` (under ``taskset`` or a cpuset, other
    cores leave ours free) since boot; None without /proc/stat."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    busy = 0
    for name, *fields in (line.split() for line in lines):
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            ticks = [int(value) for value in fields[:8]]  # user nice system idle iowait irq ...
            busy += sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds this process has used (user + system, all threads)."""
    return os.times().user + os.times().system


class CpuThreads:
    """Keeps ``torch.get_num_threads()`` (at most ``most``, default PyTorch's) at the cores other
    processes leave free (half a core of use takes one), looking every ``every`` seconds;
    ``others``: their cores at the last look. Off under ``OMP_NUM_THREADS``, for bitwise repeats."""

    def __init__(self, most: int | None = None, every: float = 5.0, *,
                 cores: set[int] | None = None, clock=time.perf_counter, busy=busy_cpu_seconds,
                 own=own_cpu_seconds) -> None:  # fmt: skip
        self.most, self.every, self.others = most or torch.get_num_threads(), every, 0.0
        affinity = getattr(os, "sched_getaffinity", lambda pid: set())  # the cores we may use
        self.allowed = affinity(0) if cores is None else cores
        self.cores, self.clock, self.busy, self.own = len(self.allowed), clock, busy, own
        self.enabled = ("OMP_NUM_THREADS" not in os.environ and busy(self.allowed) is not None
                        and min(self.cores, self.most) > 1)  # fmt: skip
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        return self.clock(), self.busy(self.allowed) or 0.0, self.own()

    def update(self) -> int | None:
        """When it is time to look, re-balance; returns (and prints) the thread count if changed."""
        if not self.enabled or self.clock() - self._last[0] < self.every:
            return None
        now = self._sample()
        elapsed, busy, own = (a - b for a, b in zip(now, self._last, strict=True))
        self._last = now
        self.others = max(0.0, busy - own) / elapsed
        threads = max(1, min(self.most, self.cores - int(self.others + 0.5)))
        if threads == torch.get_num_threads():
            return None
        torch.set_num_threads(threads)
        print(f"\nother processes use {self.others:.1f} of {self.cores} cores: training with "
              f"{threads} thread(s)", file=sys.stderr)  # fmt: skip
        return threads
