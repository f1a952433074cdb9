"""The run directory: who may use it (a lock), how a run is stopped (signals), and the files a run
writes besides its checkpoints (config.json, metrics.csv, metrics.jsonl).

    runs/cpu-quick/
        config.json                 every TrainConfig field of the run
        metrics.csv, metrics.jsonl  one row per epoch (METRIC_COLUMNS)
        last.pt, last.pt.sha256     the latest state and its checksum (vitlib.checkpoint)
        best.pt, best.pt.sha256     the epoch with the best selection metric
        run.lock                    while a process trains here
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import typing
from pathlib import Path

from .checkpoint import write_atomic

METRIC_COLUMNS = (
    "epoch", "step", "train_loss", "test_loss", "test_acc", "val_acc", "best_acc", "lr",
    "seconds", "train_images_per_s", "skipped_steps",
)  # fmt: skip


class TrainingError(RuntimeError):
    """A run that cannot start or continue (busy run directory, non-finite loss, full disk)."""


class RunLock:
    """An exclusive ``flock`` on ``run.lock`` while a run uses the directory.

    The operating system releases the lock when its process ends, however it ends (SIGKILL, a
    lost machine), so there is no stale-lock takeover to get wrong. The file holds the owner's pid
    and host for the error message. A directory that already holds a run (last.pt), or a
    ``run.lock`` left by a run that died before its first checkpoint, is refused unless resuming.
    Once the lock is held, temporary files of interrupted writes (``.NAME.tmp-PID``) are removed.
    """

    def __init__(self, run_dir: Path, resume: bool, enabled: bool = True) -> None:
        self.path = run_dir / "run.lock"
        self.resume, self.enabled = resume, enabled
        self.fd = -1

    def __enter__(self) -> RunLock:
        if not self.enabled:
            return self
        run_dir = self.path.parent
        run_dir.mkdir(parents=True, exist_ok=True)
        if not self.resume and (run_dir / "last.pt").exists():
            raise TrainingError(
                f"{run_dir} already holds a run (last.pt); pass --resume to continue it "
                "or choose another --out"
            )
        left_by = self._acquire()
        if left_by and not self.resume:
            os.close(self.fd)  # the file stays: it still says which run died here
            self.fd = -1
            raise TrainingError(
                f"{run_dir} has a stale lock from process {left_by} ({self.path}), a run that "
                "stopped before its first checkpoint: pass --resume to continue that run"
            )
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        for leftover in run_dir.glob(".*.tmp-*"):
            leftover.unlink(missing_ok=True)
        return self

    def _acquire(self) -> str:
        """Lock ``run.lock``; returns the owner a dead run left in it ("" if none)."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                owner = os.read(fd, 200).decode(errors="replace").strip() or "?"
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                pid, _, host = owner.partition(" ")
                raise TrainingError(
                    f"{self.path.parent} is in use by process {pid} on {host or '?'} "
                    f"({self.path}); wait for it or choose another --out"
                ) from None
            # The previous owner may have deleted the file between our open and our lock.
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                self.fd = fd
                return os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)

    def __exit__(self, *exc) -> None:
        if self.fd >= 0:
            self.path.unlink(missing_ok=True)  # still locked: nobody can hold the old inode
            os.close(self.fd)
            self.fd = -1


class StopSignal:
    """Turns SIGINT/SIGTERM into a request the loop honours after the current step (it saves a
    checkpoint, then returns); a second signal aborts at once with KeyboardInterrupt."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, typing.Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name}: saving a checkpoint after this step", file=sys.stderr
        )

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def never_checkpointed(run_dir: Path) -> bool:
    """A run directory that exists but has neither last.pt nor best.pt: the run was stopped
    before its first checkpoint, so ``--resume`` starts it again from the beginning."""
    return run_dir.is_dir() and not any((run_dir / n).exists() for n in ("last.pt", "best.pt"))


def write_config(run_dir: Path, config) -> None:
    """config.json: every field of the run's ``TrainConfig``."""
    text = json.dumps(dataclasses.asdict(config), indent=2) + "\n"
    write_atomic(run_dir / "config.json", text.encode())


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """(Re)write metrics.csv and metrics.jsonl from ``history`` (on start and on resume)."""
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, METRIC_COLUMNS, restval="nan")
        writer.writeheader()
        writer.writerows(history)
    with open(run_dir / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in history)


def append_metrics(run_dir: Path, record: dict) -> None:
    """Add one epoch's ``record`` to metrics.csv and metrics.jsonl."""
    with open(run_dir / "metrics.csv", "a", newline="") as f:
        csv.DictWriter(f, METRIC_COLUMNS, restval="nan").writerow(record)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
