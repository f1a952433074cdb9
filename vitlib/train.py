"""Train a model on CIFAR-10: the whole run in one file, read top to bottom.

    python -m vitlib.train --preset cpu-quick                        # minutes on a CPU
    python -m vitlib.train --preset reference --datapath DIR         # RECIPE.md, 200 epochs
    python -m vitlib.train --out runs/cpu-quick --resume             # continue a stopped run
    python -m vitlib.train --out runs/cpu-quick --resume --epochs 20  # extend a finished run
    torchrun --nproc_per_node=4 -m vitlib.train --preset fast        # data parallel

``train(config)``: set up, then ``for epoch ... for batch ...`` one step per batch
(``train_step``), and after every epoch an evaluation, metrics and a checkpoint (``end_epoch``).
Guarantees live in helpers named after them, one line each: ``RunLock``, ``StopSignal``,
``rundir.save_last``, ``hardware.check_memory``, ``CpuThreads``. Every random draw is seeded
from (seed, epoch[, batch, rank]) and the lr is ``lr_at`` of the step, so a run resumed at any
batch ends with the weights of an uninterrupted one (bitwise on a CPU at a fixed thread count).
"""

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from . import distributed, hardware, rundir
from .augment import cutmix
from .config import TrainConfig, config_from_args, model_options, selection_metric, validate
from .data import DATASETS, DeviceLoader, derive_seed, load_dataset
from .evaluate import evaluate_model
from .hardware import CpuThreads, autocast
from .model import create_model
from .optim import create_optimizer
from .rundir import Progress, RunLock, StopSignal, TrainingError
from .schedule import lr_at


@dataclasses.dataclass
class Run:
    """Everything one run holds: its settings, its objects and where it stands (``progress``)."""

    config: TrainConfig
    info: distributed.DistInfo  # rank, number of processes, device
    loader: DeviceLoader  # this process's training batches
    eval_sets: dict  # "test" (and "val"): (uint8 images on the device, labels)
    model: nn.Module
    forward: nn.Module  # the model as training calls it: compiled and/or DDP-wrapped
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # loss scaling, active with fp16 only
    ema: AveragedModel | None
    amp_dtype: torch.dtype | None  # autocast dtype, None for float32
    layout: torch.memory_format  # of conv weights and images: channels-last with --channels_last
    progress: Progress
    stop: StopSignal
    clock: Callable[[], float]  # seconds
    clock_zero: float = 0.0  # the clock's reading when the run's elapsed time was 0

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out)

    @property
    def out_of_time(self) -> bool:
        """Whether the run has used its time budget (never without one)."""
        return 0 < 60 * self.config.time_budget <= self.progress.elapsed_s


def train(config: TrainConfig, *, clock: Callable[[], float] = time.perf_counter,
          on_batch: Callable | None = None, on_epoch_end: Callable | None = None) -> dict:  # fmt: skip
    """Train as ``config`` says; returns the last epoch's metrics, ``history`` (all epochs),
    ``run_dir`` and ``interrupted`` (the signal that stopped the run, or 0). ``clock``: seconds.
    On every process ``on_batch(run, images, labels)`` runs before each step and
    ``on_epoch_end(run, record)`` after each epoch's checkpoint (a log, a plot, a test's probe)."""
    started = clock()  # a --time_budget counts the start-up
    validate(config, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    info = distributed.setup(hardware.resolve_device(config.device))
    try:
        saved = rundir.load_resumable(config, info.is_main)  # before the lock makes the folder
        with RunLock(config.out, config.resume, enabled=info.is_main), StopSignal() as stop:
            run = set_up(config, info, saved, stop, clock, started)
            threads = CpuThreads() if info.device.type == "cpu" and info.world_size == 1 else None
            bar = progress_bar(run)
            while epochs_left(run):
                p, epoch_started = run.progress, clock()
                run.model.train()
                run.loader.set_epoch(p.epoch, start_batch=p.batch)
                for images, labels in run.loader:
                    if on_batch:
                        on_batch(run, images, labels)
                    p.lr = lr_for_next_step(run)
                    loss, stopping, p.elapsed_s = train_step(run, images, labels)
                    count_loss(run, loss)
                    p.step, p.batch = p.step + 1, p.batch + 1
                    bar.update(1)
                    if threads:
                        threads.update()  # as many threads as other processes leave cores
                    if stopping or checkpoint_due(run):
                        rundir.save_last(run)
                    if stopping:
                        distributed.barrier()  # last.pt is written before any process leaves
                        return result(run, bar)
                    if run.out_of_time:
                        break
                record = end_epoch(run, epoch_started)
                if on_epoch_end:
                    on_epoch_end(run, record)
        distributed.barrier()  # every process is done with its collectives before teardown
    finally:
        distributed.cleanup()
    return result(run, bar)


def train_step(run: Run, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, bool, float]:
    """One optimizer step at ``run.progress.lr`` on images (B, 3, H, W) in [0, 1] and labels (B,).
    Returns the loss (mean over processes), whether any process was asked to stop, and the run's
    elapsed seconds on the main process's clock: one all-reduce carries all three, so every
    process decides alike. A non-finite loss takes no step."""
    c, p, rank = run.config, run.progress, run.info.rank
    for group in run.optimizer.param_groups:
        group["lr"] = p.lr
    torch.manual_seed(derive_seed(c.seed, p.epoch, p.batch, rank, "dropout"))
    mix_rng = torch.Generator().manual_seed(derive_seed(c.seed, p.epoch, p.batch, rank, "mix"))
    targets, other_targets, lam = labels, labels, 1.0  # loss = lam CE(y) + (1 - lam) CE(y')
    if c.mix == "cutmix" and torch.rand((), generator=mix_rng).item() < c.mix_prob:
        images, targets, other_targets, lam = cutmix(images, labels, c.mix_alpha, mix_rng)
    with autocast(run.info.device, run.amp_dtype):
        logits = run.forward(images.to(memory_format=run.layout)).float()  # (B, classes)
    loss = lam * F.cross_entropy(logits, targets, label_smoothing=c.label_smoothing)
    if lam < 1.0:
        loss = loss + (1 - lam) * F.cross_entropy(logits, other_targets,
                                                  label_smoothing=c.label_smoothing)  # fmt: skip
    clock = run.clock() - run.clock_zero if run.info.is_main else 0.0
    shared = torch.stack([loss.detach(), *loss.new_tensor([run.stop.signum, clock])])
    loss_sum, stop_votes, main_clock = distributed.all_reduce_sum(shared).tolist()  # 1 host sync
    if math.isfinite(loss_sum):
        run.scaler.scale(loss).backward()
        if c.grad_clip:  # clip the true gradients: unscale them first
            run.scaler.unscale_(run.optimizer)
            nn.utils.clip_grad_norm_(run.model.parameters(), c.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        if run.ema is not None:
            run.ema.update_parameters(run.model)
    run.optimizer.zero_grad(set_to_none=True)
    return loss_sum / run.info.world_size, stop_votes > 0, main_clock


def end_epoch(run: Run, started: float) -> dict:
    """Evaluate, record the epoch's metrics, save ``last.pt`` (and ``best.pt`` when the selection
    metric improved) and print one line; returns the record. ``started``: the epoch's start."""
    c, p = run.config, run.progress
    images_per_s = p.batch * c.batch_size / (run.clock() - started)  # a last epoch may be cut
    record = {"epoch": p.epoch + 1, "step": p.step,
              "train_loss": p.epoch_loss_sum / max(p.epoch_batches, 1)} | evaluate(run)  # fmt: skip
    selected = record[selection_metric(c.val_split)]
    p.best_acc = max(p.best_acc, selected)
    record |= {"best_acc": p.best_acc, "lr": p.lr, "seconds": run.clock() - started,
               "train_images_per_s": images_per_s, "skipped_steps": p.skipped}  # fmt: skip
    p.history.append(record)
    p.epoch, p.batch, p.epoch_loss_sum, p.epoch_batches = p.epoch + 1, 0, 0.0, 0
    if run.info.is_main:
        saved = rundir.save_last(run)
        if selected >= p.best_acc:
            rundir.save_best(run.run_dir, saved)
        rundir.write_metrics(run.run_dir, [record], append=True)
        print(epoch_line(c, record), flush=True)
    return record


# ---------------------------------------------------------------- set-up
def set_up(config: TrainConfig, info: distributed.DistInfo, saved: dict | None, stop: StopSignal,
           clock: Callable[[], float], started: float) -> Run:  # fmt: skip
    """Data, model, optimizer, loss scaler and EMA, restored from ``saved`` (a checkpoint) when
    resuming: its clock goes on from the time it had used (``started``: the clock when ``train``
    began). Writes config.json and the metric files and prints what the run is."""
    amp_dtype = hardware.autocast_dtype(config.precision, info.device)
    torch.manual_seed(derive_seed(config.seed, "init"))
    model = create_model(config.model, **model_options(config))
    batch = config.batch_size // info.world_size  # this process's share
    hardware.check_memory(model, batch, amp_dtype, info.device)
    layout = torch.channels_last if config.channels_last else torch.preserve_format
    model = model.to(info.device, memory_format=layout)
    optimizer = create_optimizer(model, kind=config.optimizer, lr=config.lr, betas=config.betas,
                                 eps=config.eps, weight_decay=config.weight_decay)  # fmt: skip
    average = get_ema_multi_avg_fn(config.ema)  # ema = d * ema + (1 - d) * weights, every step
    ema = AveragedModel(model, multi_avg_fn=average) if config.ema else None
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp_dtype is torch.float16)
    loader, eval_sets = load_data(config, info)
    run = Run(config, info, loader, eval_sets, model, model, optimizer, scaler, ema, amp_dtype,
              layout, Progress(), stop, clock)  # fmt: skip
    if saved is not None:
        rundir.restore(run, saved)
    run.clock_zero = started - run.progress.elapsed_s
    if config.compile:  # compiled now, by a step on a zero batch of the training shape
        example = torch.zeros(batch, *loader.images.shape[1:], device=info.device)
        model = hardware.compiled(model, example.to(memory_format=layout), amp_dtype)
    run.forward = distributed.wrap(model, info)
    if info.is_main:
        rundir.write_config(run.run_dir, config)
        rundir.write_metrics(run.run_dir, run.progress.history)
        print(describe(run), flush=True)
    return run


def load_data(config: TrainConfig, info: distributed.DistInfo) -> tuple[DeviceLoader, dict]:
    """This process's training loader, and the evaluation sets on the device: "test", and with
    ``val_split`` "val" (the first N of CINIC-10's valid/, else the last N training images)."""
    name, path, dataset = config.dataset, config.datapath, DATASETS[config.dataset]
    images, labels = load_dataset(name, path, "train", limit=config.train_limit)
    eval_sets = {"test": load_dataset(name, path, "test", limit=config.test_limit)}
    own_valid = "valid" in dataset.sizes  # a split of its own: the training set stays whole
    kept = len(labels) - (0 if own_valid else config.val_split)
    if config.val_split:
        eval_sets["val"] = load_dataset(name, path, "valid", config.val_split) if own_valid \
            else (images[kept:], labels[kept:])  # fmt: skip
    eval_sets = {name: (x.to(info.device), y) for name, (x, y) in eval_sets.items()}
    loader = DeviceLoader(images[:kept], labels[:kept], config.batch_size // info.world_size,
                          train=True, device=info.device, augment=config.augment, seed=config.seed,
                          rank=info.rank, world_size=info.world_size,
                          epoch_images=config.epoch_images, flips=dataset.flips)  # fmt: skip
    return loader, eval_sets


def describe(run: Run) -> str:
    """One line: the model, the data, the steps, the device, the precision and the schedule."""
    c, info, n = run.config, run.info, sum(p.numel() for p in run.model.parameters())
    subset = f" (a random {c.epoch_images:,} per epoch)" if c.epoch_images else ""
    length = f"for a {c.time_budget:g}-minute budget" if c.time_budget else f"x {c.epochs} epochs"
    where = f"{info.device}" + (f" x {info.world_size} processes" if info.world_size > 1 else "")
    warmup = (f"{c.warmup_epochs / c.epochs:.1%} of the time + cosine), on the clock" if c.time_budget
              else f"{c.warmup_epochs:g} epochs + cosine), per {c.schedule_unit}")  # fmt: skip
    return (f"{c.model}: {n:,} parameters, {c.dataset}: {len(run.loader.labels):,} train{subset} / "
            f"{len(run.eval_sets['test'][1]):,} test images, {len(run.loader)} steps per epoch "
            f"{length} on {where}{f', {run.amp_dtype}' if run.amp_dtype else ''}; lr {c.lr:g}: "
            f"{c.cycles} x (warmup {warmup}")  # fmt: skip


# ---------------------------------------------------------------- the helpers of the loop
def epochs_left(run: Run) -> bool:
    """Whether another epoch is due: up to ``epochs``, or with a time budget until it is used."""
    c = run.config
    return not run.out_of_time if c.time_budget else run.progress.epoch < c.epochs


def lr_for_next_step(run: Run) -> float:
    """``lr_at`` the schedule's position: the step (or epoch) about to be trained, or with a time
    budget the fraction of it used times the schedule's length (docs/training.md)."""
    c, p = run.config, run.progress
    unit = len(run.loader) if c.schedule_unit == "step" else 1  # steps per unit of the schedule
    if c.time_budget:
        position = min(p.elapsed_s / (60 * c.time_budget), 1.0) * c.epochs * unit
    else:
        position = p.step if c.schedule_unit == "step" else p.epoch
    return lr_at(position, lr=c.lr, min_lr=c.min_lr, warmup=c.warmup_epochs * unit,
                 cycle_length=c.epochs * unit / c.cycles)  # fmt: skip


def count_loss(run: Run, loss: float) -> None:
    """Add a finite loss to the epoch's mean. A non-finite one stops the run, naming the step,
    the lr and the last good checkpoint, or with ``--on_nonfinite skip`` is counted."""
    p = run.progress
    if math.isfinite(loss):
        p.epoch_loss_sum, p.epoch_batches = p.epoch_loss_sum + loss, p.epoch_batches + 1
    elif run.config.on_nonfinite == "skip":
        p.skipped += 1
    else:
        last = run.run_dir / "last.pt"
        raise TrainingError(f"non-finite loss ({loss}) at step {p.step + 1} (epoch {p.epoch + 1}, "
                            f"batch {p.batch + 1}), lr {p.lr:.3g}; last good checkpoint: "
                            f"{last if last.exists() else 'none yet'} (lower --lr, set "
                            "--grad_clip, or --on_nonfinite skip)")  # fmt: skip


def checkpoint_due(run: Run) -> bool:
    """``--checkpoint_every N``: a mid-epoch last.pt every N steps (epoch ends save anyway)."""
    every, p = run.config.checkpoint_every, run.progress
    return every > 0 and p.step % every == 0 and p.batch < len(run.loader)


def progress_bar(run: Run) -> tqdm:
    """One bar over the run's steps with tqdm's rate and time left (no total under a time
    budget); shown on the main process when asked, or ("auto") when stderr is a terminal."""
    setting = run.config.progress_bar
    shown = run.info.is_main and (setting == "on" or (setting == "auto" and sys.stderr.isatty()))
    total = None if run.config.time_budget else run.config.epochs * len(run.loader)
    return tqdm(total=total, initial=run.progress.step, unit="step", disable=not shown)


def evaluate(run: Run) -> dict:
    """Test loss and accuracy (and validation accuracy), of the EMA weights when there are some,
    with flip TTA when the run asks for it."""
    c = run.config
    model = run.ema.module if run.ema is not None else run.model
    options = {"tta": c.tta, "autocast_dtype": run.amp_dtype, "label_smoothing": c.label_smoothing}
    test = evaluate_model(model, *run.eval_sets["test"], **options)
    record = {"test_loss": test["loss"], "test_acc": test["accuracy"]}
    if "val" in run.eval_sets:  # metrics.csv shows nan without one
        record["val_acc"] = evaluate_model(model, *run.eval_sets["val"], **options)["accuracy"]
    return record


def epoch_line(config: TrainConfig, record: dict) -> str:
    """The line printed at the end of an epoch (``epoch 3/11``; ``epoch 3`` on the clock)."""
    epoch = f"epoch {record['epoch']:>3}" + ("" if config.time_budget else f"/{config.epochs}")
    val = f"val_acc {100 * record['val_acc']:.2f}%  " if "val_acc" in record else ""
    return (f"{epoch}  train_loss {record['train_loss']:.4f}  test_loss "
            f"{record['test_loss']:.4f}  test_acc {100 * record['test_acc']:.2f}%  {val}"
            f"lr {record['lr']:.3g}  {record['seconds']:.1f}s")  # fmt: skip


def result(run: Run, bar: tqdm) -> dict:
    """What ``train`` returns; after a stop signal it says how to go on (last.pt has the step)."""
    bar.close()
    if run.stop.signum and run.info.is_main:
        print(f"stopped at step {run.progress.step}; continue with --resume (checkpoint "
              f"{run.run_dir / 'last.pt'})", file=sys.stderr)  # fmt: skip
    history = run.progress.history
    return {**(history[-1] if history else {}), "history": history,
            "run_dir": str(run.run_dir), "interrupted": run.stop.signum}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m vitlib.train``; returns the exit status (128 + signal number if stopped)."""
    try:
        config = config_from_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has printed
        return int(e.code or 0)
    try:
        interrupted = train(config)["interrupted"]
    except (ValueError, OSError, MemoryError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 128 + interrupted if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
