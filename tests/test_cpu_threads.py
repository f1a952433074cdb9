"""CpuThreads: as many PyTorch threads as the cores other processes leave free."""

from __future__ import annotations

import os

import pytest
import torch

from vitlib.hardware import CpuThreads, busy_cpu_seconds


class Machine:
    """A fake 2-core machine: ``others`` cores of other processes' work per second beside our
    ``ours``; each ``tick`` advances its clock by 10 s."""

    clock, busy, own, others, ours = 0.0, 0.0, 0.0, 0.0, 2.0

    def tick(self):
        self.clock += 10.0
        self.busy += 10.0 * (self.others + self.ours)
        self.own += 10.0 * self.ours

    def threads(self, **options) -> CpuThreads:
        return CpuThreads(cores={0, 1}, clock=lambda: self.clock, busy=lambda cores: self.busy,
                          own=lambda: self.own, **options)  # fmt: skip


@pytest.fixture
def machine(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield Machine()
    torch.set_num_threads(threads)


def test_gives_a_core_back_and_takes_it_again(machine):
    governor = machine.threads(every=5.0)
    assert governor.enabled and governor.most == 2
    machine.tick()
    assert governor.update() is None and torch.get_num_threads() == 2  # alone: keep both
    machine.others, machine.ours = 1.3, 0.7
    machine.tick()
    assert governor.update() == 1 and torch.get_num_threads() == 1
    assert governor.others == pytest.approx(1.3)
    machine.tick()
    assert governor.update() is None  # still shared: no change
    machine.others, machine.ours = 0.1, 1.0
    machine.tick()
    assert governor.update() == 2 and torch.get_num_threads() == 2


def test_looks_only_every_few_seconds(machine):
    governor = machine.threads(every=30.0)
    machine.others = 2.0
    machine.tick()  # 10 s: too early
    assert governor.update() is None and torch.get_num_threads() == 2


def test_an_explicit_thread_count_is_kept(machine, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    governor = machine.threads()
    machine.others = 2.0
    machine.tick()
    assert not governor.enabled and governor.update() is None and torch.get_num_threads() == 2


def test_busy_cpu_seconds_counts_only_the_given_cores(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  300 0 300 900 0 0 0 0 0 0\n"  # the whole machine: not read
        "cpu0 100 0 100 300 0 0 0 0 0 0\n"
        "cpu1 100 0 100 300 50 0 0 0 0 0\n"  # iowait is idle time
        "cpu2 100 0 100 300 0 0 0 0 0 0\n"
        "intr 12345\n"
    )
    tick = os.sysconf("SC_CLK_TCK")
    assert busy_cpu_seconds({0, 1}, stat) == pytest.approx(400 / tick)
    assert busy_cpu_seconds({2}, stat) == pytest.approx(200 / tick)
    assert busy_cpu_seconds({0}, tmp_path / "missing") is None
