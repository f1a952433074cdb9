"""The training loop and its command line.

    python -m vitlib.train --preset reference --datapath DIR        # RECIPE.md, 200 epochs
    python -m vitlib.train --preset fast                            # modern GPU recipe
    python -m vitlib.train --preset cpu-quick                       # a few minutes on a CPU
    python -m vitlib.train --out runs/reference --resume            # continue a stopped run
    torchrun --nproc_per_node=4 -m vitlib.train --preset fast       # data parallel

One epoch: reseed from (seed, epoch, rank) -> for every batch: CutMix/MixUp -> forward
(bf16 autocast on CUDA if asked) -> label-smoothed cross-entropy -> non-finite check ->
backward -> AdamW step -> schedule step (per step or per epoch) -> evaluate on the test set ->
append metrics.csv / metrics.jsonl -> write last.pt (and best.pt). All randomness of an epoch
derives from (seed, epoch, rank), so ``--resume`` replays the remaining epochs exactly and ends
with the same weights as an uninterrupted run (bitwise on a CPU).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import os
import signal
import socket
import sys
import threading
import time
import typing
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from . import distributed
from .augment import cutmix, mixup
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_atomic
from .config import (
    CHOICES,
    PRESETS,
    TrainConfig,
    config_from_dict,
    preset_config,
    resolve_device,
    resolve_precision,
    resume_conflicts,
    validate,
)
from .cpu import CpuThreads
from .data import DeviceLoader, load_cifar10, make_cpu_loader
from .evaluate import evaluate_model
from .model import create_model
from .optim import create_optimizer
from .schedule import build_schedule, make_scheduler

METRIC_COLUMNS = (
    "epoch", "step", "train_loss", "test_loss", "test_acc", "val_acc", "best_acc", "lr",
    "seconds", "train_images_per_s", "skipped_steps",
)  # fmt: skip
MIXERS = {"cutmix": cutmix, "mixup": mixup}
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingError(RuntimeError):
    """A run that cannot start or continue (busy run directory, non-finite loss)."""


def selection_metric(val_split: int) -> str:
    """The metric best.pt is selected on: ``val_acc`` with a validation split, else ``test_acc``."""
    return "val_acc" if val_split else "test_acc"


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from e.g. (seed, epoch, rank, purpose); nearby inputs give unrelated seeds."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


# ---------------------------------------------------------------- run directory and signals


class RunLock:
    """``run.lock`` (pid and host) in the run directory while a run uses it.

    Refuses a directory that another live process holds, and one that already holds a run unless
    resuming it; a stale lock (its process is gone, e.g. killed) is taken over only when resuming.
    The lock file appears whole (written aside, then hard-linked), and once it is held the
    temporary files of interrupted writes (``.NAME.tmp-PID``) are removed."""

    def __init__(self, run_dir: Path, resume: bool, enabled: bool = True) -> None:
        self.path = run_dir / "run.lock"
        self.resume, self.enabled = resume, enabled

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
        mine = run_dir / f".run.lock.tmp-{os.getpid()}"
        mine.write_text(f"{os.getpid()} {socket.gethostname()}\n")
        try:
            os.link(mine, self.path)
        except FileExistsError:
            self._take_over_stale(mine)
        finally:
            mine.unlink(missing_ok=True)
        for leftover in run_dir.glob(".*.tmp-*"):
            leftover.unlink(missing_ok=True)
        return self

    def _take_over_stale(self, mine: Path) -> None:
        """Replace a lock whose process is gone (when resuming); otherwise raise naming it."""
        pid, _, host = self.path.read_text().strip().partition(" ")
        here = host == socket.gethostname()
        alive = not pid.isdigit() or not here or _pid_alive(int(pid))
        if self.resume and not alive:
            os.replace(mine, self.path)
            return
        if not alive:
            fix = "pass --resume to continue that run"
        elif here:
            fix = "wait for it or choose another --out"
        else:
            fix = (
                "wait for it or choose another --out; if that machine is gone (preempted), "
                f"delete {self.path} and resume"
            )
        state = "is in use by" if alive else "has a stale lock from"
        raise TrainingError(
            f"{self.path.parent} {state} process {pid or '?'} on {host or '?'} ({self.path}); {fix}"
        )

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


# ---------------------------------------------------------------- pieces of a step


def mixed_loss(
    logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: float, smoothing: float
) -> torch.Tensor:
    """``lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)``, label-smoothed; logits (B, K)."""
    loss = F.cross_entropy(logits, y_a, label_smoothing=smoothing)
    if lam == 1.0:
        return loss
    return lam * loss + (1 - lam) * F.cross_entropy(logits, y_b, label_smoothing=smoothing)


def make_train_loader(config: TrainConfig, info: distributed.DistInfo, images, labels):
    """This rank's shuffled training batches (batch_size / world_size images each)."""
    batch = config.batch_size // info.world_size
    shard = dict(seed=config.seed, rank=info.rank, world_size=info.world_size)
    if config.loader == "device":
        return DeviceLoader(
            images, labels, batch, train=True, device=info.device, augment=config.augment, **shard
        )
    return make_cpu_loader(
        images,
        labels,
        batch,
        train=True,
        num_workers=config.num_workers,
        augment=config.augment,
        **shard,
    )


def maybe_compile(
    model: nn.Module, example: torch.Tensor, amp_dtype: torch.dtype | None
) -> nn.Module:
    """``torch.compile(model)``, compiled now with one forward/backward on ``example``; on any
    failure (no compiler, unsupported platform) prints why and returns the eager model."""
    try:
        compiled = torch.compile(model)
        with torch.autocast(
            example.device.type, amp_dtype or torch.float32, enabled=bool(amp_dtype)
        ):
            compiled(example).float().sum().backward()
    except Exception as e:  # compilation can fail in many backend-specific ways
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(
            f"torch.compile failed ({type(e).__name__}: {first_line}); training eagerly",
            file=sys.stderr,
        )
        compiled = model
    model.zero_grad(set_to_none=True)
    return compiled


class TimeEstimate:
    """Prints, once, the measured time per step and the projected time of the rest of the run:
    timed over ``steps`` steps after the first (which pays for warm-up)."""

    def __init__(self, total_steps: int, enabled: bool = True, steps: int = 10) -> None:
        self.total, self.enabled, self.steps = total_steps, enabled, steps
        self.done, self.start = 0, 0.0

    def step(self) -> None:
        self.done += 1
        if not self.enabled or self.done > self.steps + 1:
            return
        if self.done == 1:
            self.start = time.perf_counter()
        elif self.done == self.steps + 1 and self.total > self.done:
            per_step = (time.perf_counter() - self.start) / self.steps
            left = per_step * (self.total - self.done)
            when = (f"{left / 3600:.1f} hours" if left >= 3600
                    else f"{left / 60:.1f} minutes" if left >= 60 else f"{left:.0f} s")  # fmt: skip
            print(f"\n{per_step:.3g} s per step: about {when} for the remaining "
                  f"{self.total - self.done:,} steps, plus evaluation", flush=True)  # fmt: skip


# ---------------------------------------------------------------- the run


@dataclasses.dataclass
class Progress:
    """Where a run stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed in the current epoch (non-zero after a signal)
    step: int = 0  # optimizer steps, including skipped ones
    skipped: int = 0  # steps skipped for a non-finite loss
    # best value of the selection metric: val_acc with a validation split, else test_acc
    best_acc: float = -1.0
    epoch_loss_sum: float = 0.0  # over this epoch's completed batches
    epoch_batches: int = 0
    history: list = dataclasses.field(default_factory=list)  # one dict per completed epoch


def train(config: TrainConfig) -> dict:
    """Train as ``config`` says; returns the last epoch's metrics plus ``history`` (all epochs),
    ``run_dir`` and ``interrupted`` (the signal number that stopped the run, or 0)."""
    validate(config, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    info = distributed.setup(resolve_device(config.device))
    run_dir = Path(config.out)
    start_over = config.resume and _never_checkpointed(run_dir)
    if start_over and info.is_main:
        print(f"{run_dir} has no checkpoint yet: starting the run from the beginning", flush=True)
    try:
        with RunLock(run_dir, config.resume, enabled=info.is_main), StopSignal() as stop:
            result = _run(config, info, run_dir, stop, start_over)
        # Every rank has finished its collectives (rank 0 may still be writing checkpoints)
        # before any tears the process group down; an exception skips this, so it cannot hang.
        distributed.barrier()
        return result
    finally:
        distributed.cleanup()


def _never_checkpointed(run_dir: Path) -> bool:
    """A run directory that exists but has neither last.pt nor best.pt: the run was stopped
    before its first checkpoint, so ``--resume`` starts it again from the beginning."""
    return run_dir.is_dir() and not any((run_dir / n).exists() for n in ("last.pt", "best.pt"))


def _run(
    config: TrainConfig,
    info: distributed.DistInfo,
    run_dir: Path,
    stop: StopSignal,
    start_over: bool = False,
) -> dict:
    device, main = info.device, info.is_main
    amp_dtype = AMP_DTYPES.get(resolve_precision(config.precision, device))
    state = None
    if config.resume and not start_over:
        state = load_checkpoint(run_dir / "last.pt", map_location=device)
    if state is not None:
        conflicts = resume_conflicts(config_from_dict(state["config"]), config)
        if conflicts:
            raise ValueError(
                f"--resume with a different config than {run_dir / 'last.pt'}: {conflicts}"
            )
        if state["progress"]["batch"] and state["world_size"] != info.world_size:
            raise ValueError(
                f"{run_dir / 'last.pt'} stopped mid-epoch with {state['world_size']} process(es); "
                f"resume it with the same number, not {info.world_size}"
            )

    train_images, train_labels = load_cifar10(config.datapath, "train", limit=config.train_limit)
    held_out = len(train_labels) - config.val_split  # the last val_split images validate
    val_images, val_labels = train_images[held_out:].to(device), train_labels[held_out:]
    train_images, train_labels = train_images[:held_out], train_labels[:held_out]
    test_images, test_labels = load_cifar10(config.datapath, "test", limit=config.test_limit)
    test_images = test_images.to(device)
    loader = make_train_loader(config, info, train_images, train_labels)

    torch.manual_seed(derive_seed(config.seed, "init"))
    model = create_model(config.model, **config.model_overrides).to(device)
    optimizer = create_optimizer(
        model, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
    )
    schedule = build_schedule(
        lr=config.lr,
        min_lr=config.min_lr,
        epochs=config.epochs,
        warmup_epochs=config.warmup_epochs,
        cycles=config.cycles,
        unit=config.schedule_unit,
        steps_per_epoch=len(loader),
    )
    scheduler = make_scheduler(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema)) if config.ema else None
    )
    progress = Progress()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
            ema.n_averaged.fill_(state["ema_n_averaged"])
        progress = Progress(**state["progress"])
        if main:
            print(
                f"{run_dir} already holds the complete run ({config.epochs} epochs): nothing to do; "
                "train a new run with another --out"
                if progress.epoch >= config.epochs
                else f"resuming from epoch {progress.epoch + 1} (step {progress.step}, batch "
                f"{progress.batch} of that epoch) from {run_dir / 'last.pt'}",
                flush=True,
            )
    if main:
        config_json = json.dumps(dataclasses.asdict(config), indent=2) + "\n"
        write_atomic(run_dir / "config.json", config_json.encode())
        _write_metrics(run_dir, progress.history)
        if state is not None:
            _restore_best(run_dir, state)
        print(
            f"{config.model}: {sum(p.numel() for p in model.parameters()):,} parameters, "
            f"{len(train_labels):,} train / {len(test_labels):,} test images, "
            f"{len(loader)} steps per epoch x {config.epochs} epochs on {device}"
            + (f" x {info.world_size} processes" if info.world_size > 1 else "")
            + (f", {amp_dtype}" if amp_dtype else "")
            + f"; lr {config.lr:g}: {config.cycles} x (warmup {config.warmup_epochs:g} epochs + "
            f"cosine), stepped per {config.schedule_unit}",
            flush=True,
        )

    forward = model
    if config.compile:
        example = torch.zeros(config.batch_size // info.world_size, 3, 32, 32, device=device)
        forward = maybe_compile(model, example, amp_dtype)
    forward = distributed.wrap(forward, info)
    show_bar = main and (
        config.progress == "on" or (config.progress == "auto" and sys.stderr.isatty())
    )
    threads = CpuThreads() if device.type == "cpu" and info.world_size == 1 else None
    estimate = TimeEstimate(total_steps=config.epochs * len(loader) - progress.step, enabled=main)

    def checkpoint_state(rng: dict) -> dict:
        return {
            "model": model.state_dict(),
            "ema": ema.module.state_dict() if ema is not None else None,
            "ema_n_averaged": int(ema.n_averaged) if ema is not None else 0,
            "model_name": config.model,
            "model_config": dataclasses.asdict(model.config),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": progress.epoch,
            "step": progress.step,
            "progress": dataclasses.asdict(progress),
            "rng": rng,
            "world_size": info.world_size,
            "config": dataclasses.asdict(config),
        }

    for epoch in range(progress.epoch, config.epochs):
        start = time.perf_counter()
        torch.manual_seed(derive_seed(config.seed, epoch, info.rank, "dropout"))
        mix_generator = torch.Generator().manual_seed(
            derive_seed(config.seed, epoch, info.rank, "mix")
        )
        loader.set_epoch(epoch)
        model.train()
        resume_batch = progress.batch
        lr = optimizer.param_groups[0]["lr"]
        bar = tqdm(total=len(loader), initial=resume_batch, desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not show_bar, leave=False, dynamic_ncols=True)  # fmt: skip
        for i, (images, labels) in enumerate(loader):
            if i < resume_batch:
                continue  # replayed (the loader's randomness advances as in the first run)
            if i == resume_batch and resume_batch:
                _set_rng(state["rng"], info.rank, mix_generator, device)
            images, labels = (
                images.to(device, non_blocking=True),
                labels.to(device, non_blocking=True),
            )
            lr = optimizer.param_groups[0]["lr"]
            loss_value, stop_votes = _train_step(
                config,
                forward,
                model,
                optimizer,
                scaler,
                ema,
                images,
                labels,
                mix_generator,
                amp_dtype,
                stop,
            )
            if math.isfinite(loss_value):
                progress.epoch_loss_sum += loss_value
                progress.epoch_batches += 1
            elif config.on_nonfinite == "stop":
                last = run_dir / "last.pt"
                raise TrainingError(
                    f"non-finite loss ({loss_value}) at step {progress.step + 1} (epoch {epoch + 1}, batch "
                    f"{i + 1}), lr {lr:.3g}; last good checkpoint: "
                    + (str(last) if last.exists() else "none yet")
                    + " (lower --lr, set --grad_clip, or --on_nonfinite skip)"
                )
            else:
                progress.skipped += 1
            progress.step += 1
            progress.batch = i + 1
            estimate.step()
            if config.schedule_unit == "step":
                scheduler.step()
            bar.update(1)
            if threads is not None and threads.update():
                print(f"\nother processes use {threads.others:.1f} of {threads.cores} cores: "
                      f"training with {torch.get_num_threads()} thread(s)", file=sys.stderr)  # fmt: skip
            if i % 10 == 0:
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
            every = config.checkpoint_every
            if stop_votes or (every and progress.step % every == 0 and i + 1 < len(loader)):
                rng = distributed.all_gather(_get_rng(mix_generator, device), info)
                if main:
                    _save(run_dir / "last.pt", checkpoint_state(rng))
            if stop_votes:
                bar.close()
                if main:
                    print(f"stopped at step {progress.step}; continue with --resume (checkpoint {run_dir / 'last.pt'})", file=sys.stderr)  # fmt: skip
                return {**(progress.history[-1] if progress.history else {}), "history": progress.history,
                        "run_dir": str(run_dir), "interrupted": stop.signum}  # fmt: skip
        bar.close()
        if config.schedule_unit == "epoch":
            scheduler.step()
        train_seconds = time.perf_counter() - start
        totals = torch.tensor(
            [progress.epoch_loss_sum, progress.epoch_batches], dtype=torch.float64, device=device
        )
        loss_sum, batches = distributed.all_reduce_sum(totals).tolist()
        evaluated = ema.module if ema is not None else model
        options = dict(tta=config.tta, autocast_dtype=amp_dtype)
        result = evaluate_model(
            evaluated, test_images, test_labels, label_smoothing=config.label_smoothing, **options
        )
        record = {
            "epoch": epoch + 1,
            "step": progress.step,
            "train_loss": loss_sum / max(batches, 1),
            "test_loss": result["loss"],
            "test_acc": result["accuracy"],
        }
        if config.val_split:  # metrics.csv shows nan without one
            record["val_acc"] = evaluate_model(evaluated, val_images, val_labels, **options)[
                "accuracy"
            ]
        selected = record[selection_metric(config.val_split)]
        progress.best_acc = max(progress.best_acc, selected)
        record |= {
            "best_acc": progress.best_acc,
            "lr": lr,
            "seconds": time.perf_counter() - start,
            "train_images_per_s": len(loader) * config.batch_size / train_seconds,
            "skipped_steps": progress.skipped,
        }
        progress.history.append(record)
        progress.epoch, progress.batch = epoch + 1, 0
        progress.epoch_loss_sum, progress.epoch_batches = 0.0, 0
        rng = distributed.all_gather(_get_rng(mix_generator, device), info)
        if main:
            state_now = checkpoint_state(rng)
            _save(run_dir / "last.pt", state_now)
            if selected >= progress.best_acc:
                _save(run_dir / "best.pt", _best_state(state_now))
            _append_metrics(run_dir, record)
            print(
                f"epoch {epoch + 1:>3}/{config.epochs}  train_loss {record['train_loss']:.4f}  "
                f"test_loss {record['test_loss']:.4f}  test_acc {100 * record['test_acc']:.2f}%  "
                + (f"val_acc {100 * record['val_acc']:.2f}%  " if config.val_split else "")
                + f"lr {lr:.3g}  {record['seconds']:.1f}s",
                flush=True,
            )
    return {
        **progress.history[-1],
        "history": progress.history,
        "run_dir": str(run_dir),
        "interrupted": 0,
    }


def _save(path: Path, state: dict) -> None:
    """``save_checkpoint``; a failed write (disk full, read-only directory) stops the run with
    a TrainingError saying what is left and what to do."""
    try:
        save_checkpoint(path, state)
    except OSError as e:
        raise TrainingError(
            f"{e}; the run stopped at step {state['step']}. Free disk space or make "
            f"{path.parent} writable, then continue with --resume"
        ) from e


def _best_state(state: dict) -> dict:
    """The best.pt form of a checkpoint state: weights and progress, no optimizer/scheduler."""
    return {**state, "optimizer": None, "scheduler": None}


def _restore_best(run_dir: Path, state: dict) -> None:
    """Rewrite best.pt from a resumed epoch-end ``state`` that was the best so far when the run
    was killed between writing last.pt and best.pt."""
    progress = state["progress"]
    history = progress["history"]
    if progress["batch"] or not history:
        return
    if history[-1][selection_metric(state["config"].get("val_split"))] < progress["best_acc"]:
        return
    try:
        saved_epoch = load_checkpoint(run_dir / "best.pt")["epoch"]
    except (FileNotFoundError, CheckpointError):
        saved_epoch = None
    if saved_epoch != state["epoch"]:
        _save(run_dir / "best.pt", _best_state(state))


def _train_step(
    config, forward, model, optimizer, scaler, ema, images, labels, generator, amp_dtype, stop
):
    """One optimizer step on a batch. Returns (mean loss over ranks, whether any rank was asked to
    stop); both come from one all-reduce, so every rank takes the same decision. The step is not
    taken when the loss is non-finite."""
    y_a = y_b = labels
    lam = 1.0
    if config.mix != "none" and torch.rand((), generator=generator).item() < config.mix_prob:
        images, y_a, y_b, lam = MIXERS[config.mix](images, labels, config.mix_alpha, generator)
    with torch.autocast(
        images.device.type, amp_dtype or torch.float32, enabled=amp_dtype is not None
    ):
        logits = forward(images)
    loss = mixed_loss(logits.float(), y_a, y_b, lam, config.label_smoothing)
    flags = torch.stack([loss.detach(), torch.tensor(float(stop.signum), device=loss.device)])
    loss_sum, stop_votes = distributed.all_reduce_sum(flags).tolist()  # the step's one host sync
    loss_value = loss_sum / (
        torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    )
    if math.isfinite(loss_value):
        scaler.scale(loss).backward()
        if config.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            ema.update_parameters(model)
    optimizer.zero_grad(set_to_none=True)
    return loss_value, stop_votes > 0


def _get_rng(mix_generator: torch.Generator, device: torch.device) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "mix": mix_generator.get_state(),
    }


def _set_rng(
    per_rank: list[dict], rank: int, mix_generator: torch.Generator, device: torch.device
) -> None:
    rng = per_rank[rank]
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"].cpu(), device)
    mix_generator.set_state(rng["mix"].cpu())


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    """(Re)write metrics.csv and metrics.jsonl from ``history`` (on start and on resume)."""
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, METRIC_COLUMNS, restval="nan")
        writer.writeheader()
        writer.writerows(history)
    with open(run_dir / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in history)


def _append_metrics(run_dir: Path, record: dict) -> None:
    with open(run_dir / "metrics.csv", "a", newline="") as f:
        csv.DictWriter(f, METRIC_COLUMNS, restval="nan").writerow(record)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------- command line


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def build_parser() -> argparse.ArgumentParser:
    """One flag per ``TrainConfig`` field, in underscore and dash spelling (``--batch_size``,
    ``--batch-size``); only flags given on the command line override the preset."""
    parser = argparse.ArgumentParser(
        prog="python -m vitlib.train",
        description="Train a RelViT on CIFAR-10. Flags override the chosen preset's values.",
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        flags += ["--data"] if f.name == "datapath" else []  # the spelling data.py's errors suggest
        values = {name: preset_config(name).__dict__[f.name] for name in PRESETS}
        shown = values["reference"] if len(set(map(repr, values.values()))) == 1 else values
        text = f.metadata["help"]
        if f.name != "preset" and "default:" not in text:
            text += f" (default: {shown})"
        kwargs: dict = {"help": text.replace("%", "%%")}
        hint = hints[f.name]
        if f.name == "preset":
            kwargs["choices"] = sorted(PRESETS)
        elif f.name in CHOICES:
            kwargs["choices"] = CHOICES[f.name]
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif hint == (int | None):
            kwargs.update(type=_optional_int, metavar="N")
        elif f.name == "betas":
            kwargs.update(type=float, nargs=2, metavar=("BETA1", "BETA2"))
        elif f.name == "model_overrides":
            kwargs.update(type=_key_value, nargs="+", metavar="KEY=VALUE")
        elif hint in (int, float):
            kwargs["type"] = hint
        parser.add_argument(*flags, **kwargs)
    return parser


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    """The ``TrainConfig`` a command line asks for: the preset (or, with --resume, the run's saved
    config.json) with the given flags applied."""
    args = vars(build_parser().parse_args(argv))
    if "model_overrides" in args:
        args["model_overrides"] = dict(args["model_overrides"])
    if "betas" in args:
        args["betas"] = tuple(args["betas"])
    preset = args.pop("preset", "reference")
    if args.get("resume"):
        out = Path(args.get("out", preset_config(preset).out))
        saved = out / "config.json"
        if saved.is_file():
            return config_from_dict({**json.loads(saved.read_text()), **args})
    return preset_config(preset, **args)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (128 + signal number if stopped)."""
    try:
        config = config_from_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed by argparse
        return int(e.code or 0)
    try:
        result = train(config)
    except (ValueError, OSError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 128 + result["interrupted"] if result["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
