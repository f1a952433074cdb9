"""The run directory and what it guarantees (docs/reliability.md): one run at a time, a clean stop
on Ctrl-C or SIGTERM, checkpoints a run resumes from exactly, and the files a run writes.

    runs/cpu-quick/
        config.json                 every TrainConfig field of the run
        metrics.csv, metrics.jsonl  one row per epoch (METRIC_COLUMNS)
        last.pt, last.pt.sha256     the latest state and its checksum (vitlib.checkpoint)
        best.pt, best.pt.sha256     the epoch with the best selection metric
        run.lock                    while a process trains here"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import signal
import socket
import sys
import threading
import typing
from pathlib import Path

import filelock

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_atomic
from .config import TrainConfig, config_from_dict, resume_conflicts, selection_metric

if typing.TYPE_CHECKING:
    from .train import Run

METRIC_COLUMNS = ("epoch", "step", "train_loss", "test_loss", "test_acc", "val_acc", "best_acc",
                  "lr", "seconds", "train_images_per_s", "skipped_steps")  # fmt: skip


@dataclasses.dataclass
class Progress:
    """Where a run stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed in the current epoch (non-zero after a stop signal)
    step: int = 0  # optimizer steps, skipped ones included
    skipped: int = 0  # steps skipped for a non-finite loss
    best_acc: float = -1.0  # best selection metric so far (val_acc with a validation split)
    epoch_loss_sum: float = 0.0  # over this epoch's finished batches (mean over processes)
    epoch_batches: int = 0
    lr: float = 0.0  # the learning rate of the latest step
    elapsed_s: float = 0.0  # the run's wall time, start-up included (main process's clock)
    history: list = dataclasses.field(default_factory=list)  # one dict per finished epoch


class TrainingError(RuntimeError):
    """A run that cannot start or continue (busy run directory, non-finite loss, full disk)."""


class RunLock:
    """One process trains in a run directory at a time: ``run.lock`` (``filelock``, released however
    its process ends) holds its pid and host, deleted on a clean exit; without ``resume`` one left
    behind, or a run (last.pt), is refused. Leftover ``.NAME.tmp-PID`` files are removed."""

    def __init__(self, run_dir: str | os.PathLike, resume: bool, enabled: bool = True) -> None:
        self.path = Path(run_dir) / "run.lock"
        self.resume, self.enabled = resume, enabled
        self.lock = filelock.FileLock(self.path, timeout=0)

    def __enter__(self) -> RunLock:
        if not self.enabled:
            return self
        run_dir = self.path.parent
        run_dir.mkdir(parents=True, exist_ok=True)
        if not self.resume and (run_dir / "last.pt").exists():
            raise TrainingError(f"{run_dir} already holds a run (last.pt); pass --resume to "
                                "continue it or choose another --out")  # fmt: skip
        try:
            self.lock.acquire()
        except filelock.Timeout:
            pid, _, host = self._owner().partition(" ")
            raise TrainingError(f"{run_dir} is in use by process {pid or '?'} on {host or '?'} "
                                f"({self.path}); wait for it or choose another --out") from None  # fmt: skip
        left_by = self._owner()
        if left_by and not self.resume:
            self.lock.release()  # the file stays: it says which run died here
            raise TrainingError(f"{run_dir} has a stale lock from process {left_by} ({self.path}), "
                                "a run that stopped before its first checkpoint: pass --resume to "
                                "continue that run")  # fmt: skip
        self.path.write_text(f"{os.getpid()} {socket.gethostname()}\n")
        for leftover in run_dir.glob(".*.tmp-*"):
            leftover.unlink(missing_ok=True)
        return self

    def _owner(self) -> str:  # "pid host" of the process that holds (or held) the lock, or ""
        try:
            return self.path.read_text(errors="replace").strip()
        except OSError:  # Windows refuses reads of a locked file
            return ""

    def __exit__(self, *exc) -> None:
        if self.lock.is_locked:
            self.path.write_text("")  # a clean exit: nothing left for the next run to report
            with contextlib.suppress(OSError):  # Windows: filelock deletes it on release
                self.path.unlink()  # while still locked
            self.lock.release()


class StopSignal:
    """SIGINT/SIGTERM: save and stop after this step; a second signal raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.signum, self._previous = 0, {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step",
              file=sys.stderr)  # fmt: skip

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def write_config(run_dir: Path, config: TrainConfig) -> None:
    """config.json: every field of the run's ``TrainConfig``."""
    text = json.dumps(dataclasses.asdict(config), indent=2) + "\n"
    write_atomic(run_dir / "config.json", text.encode())


def write_metrics(run_dir: Path, rows: list[dict], append: bool = False) -> None:
    """metrics.csv and metrics.jsonl: rewritten from ``rows`` or ``append``-ed one epoch's row."""
    mode = "a" if append else "w"
    with open(run_dir / "metrics.csv", mode, newline="") as f:
        writer = csv.DictWriter(f, METRIC_COLUMNS, restval="nan")  # nan: no val_acc
        if not append:
            writer.writeheader()
        writer.writerows(rows)
    with open(run_dir / "metrics.jsonl", mode) as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def save_last(run: Run) -> dict | None:
    """Write last.pt on the main process and return it: the state, ``weights_only`` loadable."""
    if not run.info.is_main:
        return None
    ema, p = run.ema, run.progress
    saved = {
        "model": run.model.state_dict(), "model_name": run.config.model,
        "model_config": dataclasses.asdict(run.model.config),
        "ema": None if ema is None else ema.module.state_dict(),
        "ema_n_averaged": 0 if ema is None else int(ema.n_averaged),
        "optimizer": run.optimizer.state_dict(), "scaler": run.scaler.state_dict(),
        "epoch": p.epoch, "step": p.step, "progress": dataclasses.asdict(p),
        "world_size": run.info.world_size, "config": dataclasses.asdict(run.config),
    }  # fmt: skip
    save(run.run_dir / "last.pt", saved)
    return saved


def save_best(run_dir: Path, saved: dict) -> None:
    """best.pt: a checkpoint's weights and progress, without the optimizer."""
    save(run_dir / "best.pt", {**saved, "optimizer": None})


def save(path: Path, saved: dict) -> None:
    """``save_checkpoint``; a failed write (disk full) stops the run with a TrainingError."""
    try:
        save_checkpoint(path, saved)
    except OSError as e:
        raise TrainingError(f"{e}; the run stopped at step {saved['step']}. Free disk space or "
                            f"make {path.parent} writable, then continue with --resume") from e  # fmt: skip


def load_resumable(config: TrainConfig, is_main: bool) -> dict | None:
    """With ``--resume``, last.pt's state, checked against ``config`` (``epochs`` may grow); None
    without it or before a first checkpoint (the run starts over)."""
    run_dir = Path(config.out)
    if not config.resume:
        return None
    if run_dir.is_dir() and not any(run_dir.glob("*.pt")):
        if is_main:
            print(f"{run_dir} has no checkpoint yet: starting the run from the beginning")
        return None
    last = run_dir / "last.pt"
    saved = load_checkpoint(last)
    before = config_from_dict(saved["config"])
    if conflicts := resume_conflicts(before, config):
        raise ValueError(f"--resume with a different config than {last}: {conflicts}")
    if config.epochs < before.epochs:
        raise ValueError(f"--epochs {config.epochs} is shorter than the run in {last} "
                         f"({before.epochs} epochs): a run can be extended, not shortened; train "
                         "a new run with another --out")  # fmt: skip
    if config.epochs > before.epochs and is_main:
        print(f"extending the run from {before.epochs} to {config.epochs} epochs: the learning "
              f"rate follows the schedule of {config.epochs} epochs from here", flush=True)  # fmt: skip
    return saved


def restore(run: Run, saved: dict) -> None:
    """Load ``saved`` (weights, optimizer, scaler, EMA, progress) into ``run`` and report where."""
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scaler.load_state_dict(saved["scaler"])
    if run.ema is not None:
        run.ema.module.load_state_dict(saved["ema"])
        run.ema.n_averaged.fill_(saved["ema_n_averaged"])
    run.progress = p = Progress(**saved["progress"])
    c = run.config
    if not run.info.is_main:
        return
    restore_best(run.run_dir, saved)
    if run.out_of_time:
        print(f"{run.run_dir} already holds the complete run: it used its {c.time_budget:g}-minute "
              "budget; nothing to do", flush=True)  # fmt: skip
    elif not c.time_budget and p.epoch >= c.epochs:
        print(f"{run.run_dir} already holds the complete run ({p.epoch} epochs): nothing to do; "
              f"pass --epochs M (more than {p.epoch}) with --resume to extend it", flush=True)  # fmt: skip
    else:
        used = f", {p.elapsed_s / 60:.1f} of {c.time_budget:g} min used" if c.time_budget else ""
        print(f"resuming from epoch {p.epoch + 1} (step {p.step}, batch {p.batch} of that epoch"
              f"{used}) from {run.run_dir / 'last.pt'}", flush=True)  # fmt: skip


def restore_best(run_dir: Path, saved: dict) -> None:
    """Rewrite best.pt from ``saved`` if that is the best epoch end and best.pt is not it."""
    progress, history = saved["progress"], saved["progress"]["history"]
    metric = selection_metric(saved["config"]["val_split"])
    if progress["batch"] or not history or history[-1][metric] < progress["best_acc"]:
        return  # not an epoch end, or not the best epoch
    try:
        best_epoch = load_checkpoint(run_dir / "best.pt")["epoch"]
    except (FileNotFoundError, CheckpointError):
        best_epoch = None
    if best_epoch != saved["epoch"]:
        save_best(run_dir, saved)
