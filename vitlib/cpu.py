"""Sharing the CPU politely: as many PyTorch threads as there are cores nobody else is using.

PyTorch runs each operation as an OpenMP parallel region over all its threads, and a region ends
only when every thread has done its part. When another busy process shares the cores, one of our
threads is often descheduled for a whole time slice (milliseconds) while the others wait for it
at the barrier, region after region. Measured on 2 cores (bench/shared_cores.py, RESULTS.md): a
training run with PyTorch's default 2 threads kept 2% of its alone speed beside one other busy
PyTorch process. With one thread there is no barrier to wait at, and the run keeps its fair share.

``CpuThreads.update()`` (called by the training loop after every step, cheap) looks at the
CPU time that other processes used since its last look, every ``every`` seconds, and sets
``torch.set_num_threads`` to the cores they left free: 2 alone, 1 beside one busy process, and
back to 2 when it is gone. Linux only (it reads ``/proc/stat``); elsewhere it does nothing.

Setting ``OMP_NUM_THREADS`` turns it off: the thread count then stays as given. Do that for
bit-exact reproducibility on a shared machine, since a reduction split over another number of
threads can round differently in the last bit.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

PROC_STAT = Path("/proc/stat")


def busy_cpu_seconds(cores: set[int]) -> float | None:
    """CPU seconds that all processes have spent busy on ``cores`` since boot (None without
    /proc/stat). Only these cores count: under ``taskset`` or a container's cpuset, work on the
    machine's other cores leaves ours free."""
    try:
        lines = PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            # user nice system idle iowait irq softirq steal: all but idle and iowait
            ticks = [int(value) for value in fields[:8]]
            busy += sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds this process has used (user + system, all threads)."""
    times = os.times()
    return times.user + times.system


class CpuThreads:
    """Keeps ``torch.get_num_threads()`` at the number of cores other processes leave free.

    ``most``: the thread count when the machine is ours (default: PyTorch's at creation);
    ``every``: seconds between two looks. Another process counts as occupying a core from half
    a core of CPU use; ``others`` holds the cores they used at the last look."""

    def __init__(self, most: int | None = None, every: float = 5.0) -> None:
        self.most = most or torch.get_num_threads()
        self.allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        self.cores = len(self.allowed)
        self.every = every
        self.enabled = (
            "OMP_NUM_THREADS" not in os.environ
            and busy_cpu_seconds(self.allowed) is not None
            and min(self.cores, self.most) > 1
        )
        self.others = 0.0
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        return time.perf_counter(), busy_cpu_seconds(self.allowed) or 0.0, own_cpu_seconds()

    def update(self) -> int | None:
        """Re-balance if it is time to look; returns (and prints) the new thread count when it
        changed."""
        if not self.enabled or time.perf_counter() - self._last[0] < self.every:
            return None
        now = self._sample()
        elapsed, busy, own = (a - b for a, b in zip(now, self._last, strict=True))
        self._last = now
        self.others = max(0.0, busy - own) / elapsed
        free = self.cores - int(self.others + 0.5)
        threads = max(1, min(self.most, free))
        if threads == torch.get_num_threads():
            return None
        torch.set_num_threads(threads)
        print(f"\nother processes use {self.others:.1f} of {self.cores} cores: training with "
              f"{threads} thread(s)", file=sys.stderr)  # fmt: skip
        return threads
