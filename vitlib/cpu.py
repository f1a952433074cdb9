"""Sharing the CPU politely: as many PyTorch threads as there are cores nobody else is using.

PyTorch runs each operation as an OpenMP parallel region over all its threads, which ends only
when every thread has done its part. Beside another busy process, one of our threads is often
descheduled for a whole time slice while the others wait for it, region after region: with
PyTorch's default 2 threads a run kept 2% of its alone speed beside a busy PyTorch process on 2
cores (bench/shared_cores.py). With one thread there is no barrier to wait at.

``CpuThreads.update()`` (after every step; cheap) looks every few seconds at the CPU time other
processes used and sets ``torch.set_num_threads`` to the cores they left free. Linux only (it
reads ``/proc/stat``). ``OMP_NUM_THREADS`` turns it off, for bitwise repeats on a shared machine
(a sum split over another number of threads can round differently). Written here because no
library adapts PyTorch's thread count to other processes' load.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

PROC_STAT = Path("/proc/stat")


def busy_cpu_seconds(cores: set[int], stat: Path = PROC_STAT) -> float | None:
    """CPU seconds all processes have spent busy on ``cores`` since boot (None without
    /proc/stat). Only these cores count: under ``taskset`` or a container's cpuset, work on the
    machine's other cores leaves ours free."""
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
    """Keeps ``torch.get_num_threads()`` at the number of cores other processes leave free.

    ``most``: the thread count when the machine is ours (default: PyTorch's at creation);
    ``every``: seconds between two looks. Another process counts as occupying a core from half a
    core of CPU use; ``others`` holds the cores they used at the last look. ``cores``, ``clock``,
    ``busy`` and ``own`` (this process's CPU seconds) default to this machine's."""

    def __init__(self, most: int | None = None, every: float = 5.0, *, cores: set[int] | None = None,
                 clock=time.perf_counter, busy=busy_cpu_seconds, own=own_cpu_seconds) -> None:  # fmt: skip
        self.most, self.every, self.others = most or torch.get_num_threads(), every, 0.0
        self.allowed = cores if cores is not None else getattr(os, "sched_getaffinity", lambda _: set())(0)
        self.cores, self.clock, self.busy, self.own = len(self.allowed), clock, busy, own
        self.enabled = ("OMP_NUM_THREADS" not in os.environ and busy(self.allowed) is not None
                        and min(self.cores, self.most) > 1)  # fmt: skip
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        return self.clock(), self.busy(self.allowed) or 0.0, self.own()

    def update(self) -> int | None:
        """Re-balance if it is time to look; returns (and prints) the new thread count when it
        changed."""
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
