"""The training loop, in named phases over one state object.

    state = setup(config, info, run_dir, stop, time.perf_counter())  # data, model, ...; resume
    for epoch in epochs_left(state):                # --epochs, or until --time_budget is used
        started = time.perf_counter()
        if not train_epoch(state, epoch):           # batches -> train_step; False: stopped
            break                                   #   (a checkpoint was saved)
        end_epoch(state, epoch, started, time.perf_counter() - started)  # evaluate, record, save

(``vitlib.train.train`` is this loop, inside the run directory's lock and signal handlers.)

One step: CutMix/MixUp -> forward (bf16/fp16 autocast if asked) -> label-smoothed cross-entropy
-> non-finite check -> backward -> AdamW step -> EMA update -> schedule step (per step or per
epoch; with a time budget, the schedule at the fraction of the budget used, after every step).

Randomness is stateless. The data order of an epoch is a permutation drawn from (seed, epoch);
every other draw of a step (augmentation, the CutMix box, dropout) is seeded from (seed, epoch,
batch, rank). A run resumed at batch b of epoch e therefore starts right there: nothing is
replayed and no generator state is saved, and ``--resume`` ends with the same weights as an
uninterrupted run (bitwise on a CPU). With another number of processes a resumed run still sees
the same images in every global batch (each process takes a strided share of one global order,
as ``DistributedSampler`` does) at the same learning rates; the augmentation draws of each share,
and BatchNorm's per-process statistics on a CPU, then differ, so the weights are close, not equal.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from . import distributed
from .augment import cutmix, mixup
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig, config_from_dict, resume_conflicts, selection_metric
from .cpu import CpuThreads
from .data import DeviceLoader, derive_seed, load_cifar10
from .evaluate import evaluate_model
from .hardware import autocast, autocast_dtype, check_memory, compile_options, memory_estimate
from .model import create_model
from .optim import create_optimizer
from .rundir import StopSignal, TrainingError, append_metrics, write_config, write_metrics
from .schedule import build_schedule, make_scheduler

MIXERS = {"cutmix": cutmix, "mixup": mixup}


@dataclasses.dataclass
class Progress:
    """Where a run stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed in the current epoch (non-zero after a signal)
    step: int = 0  # optimizer steps, including skipped ones
    skipped: int = 0  # steps skipped for a non-finite loss
    # best value of the selection metric: val_acc with a validation split, else test_acc
    best_acc: float = -1.0
    epoch_loss_sum: float = 0.0  # over this epoch's completed batches (mean over processes)
    epoch_batches: int = 0
    elapsed_s: float = 0.0  # wall time of the run, start-up included (the main process's clock)
    history: list = dataclasses.field(default_factory=list)  # one dict per completed epoch


@dataclasses.dataclass
class TrainState:
    """Everything the phases share: the run's settings, its objects and where it stands."""

    config: TrainConfig
    info: distributed.DistInfo
    run_dir: Path
    stop: StopSignal
    loader: DeviceLoader
    eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]]  # "test" (and "val"): images, labels
    model: nn.Module
    forward: nn.Module  # the model as called in training: compiled and/or DDP-wrapped
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None
    amp_dtype: torch.dtype | None
    progress: Progress = dataclasses.field(default_factory=Progress)
    threads: CpuThreads | None = None
    estimate: TimeEstimate | None = None
    bar: tqdm | None = None
    clock_zero: float = 0.0  # time.perf_counter() at which the run's elapsed time was 0

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @property
    def out_of_time(self) -> bool:
        """Whether the run has used its time budget (never without one)."""
        budget = self.config.time_budget
        return bool(budget) and self.progress.elapsed_s >= 60 * budget


# ---------------------------------------------------------------- set-up


def setup(config: TrainConfig, info: distributed.DistInfo, run_dir: Path, stop: StopSignal,
          run_started: float, start_over: bool = False) -> TrainState:  # fmt: skip
    """Build the run: data, model, optimizer, schedule; restore ``last.pt`` when resuming (unless
    ``start_over``: the directory holds no checkpoint yet); write config.json and the metrics.
    ``run_started``: ``time.perf_counter()`` when this process began the run (the run's clock
    counts the start-up; a resumed run's clock goes on from the time its checkpoint had used)."""
    saved = None if start_over or not config.resume else load_resumable(config, run_dir, info)
    amp_dtype = autocast_dtype(config.precision, info.device)
    torch.manual_seed(derive_seed(config.seed, "init"))
    model = create_model(config.model, **config.model_overrides)
    per_rank_batch = config.batch_size // info.world_size
    check_memory(memory_estimate(model, per_rank_batch, amp_dtype), info.device, per_rank_batch)
    model = model.to(info.device, memory_format=memory_format(config))
    loader, eval_sets = load_data(config, info)
    optimizer = create_optimizer(
        model, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
    )
    schedule = build_schedule(
        lr=config.lr, min_lr=config.min_lr, epochs=config.epochs, warmup_epochs=config.warmup_epochs,
        cycles=config.cycles, unit=config.schedule_unit, steps_per_epoch=len(loader),
    )  # fmt: skip
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema)) if config.ema else None
    )
    state = TrainState(
        config, info, run_dir, stop, loader, eval_sets, model, model, optimizer,
        make_scheduler(optimizer, schedule),
        torch.amp.GradScaler(info.device.type, enabled=amp_dtype is torch.float16), ema, amp_dtype,
    )  # fmt: skip
    if saved is not None:
        restore(state, saved)
    state.clock_zero = run_started - state.progress.elapsed_s
    state.forward = distributed.wrap(compiled(state) if config.compile else model, info)
    total_steps = config.epochs * len(loader)
    state.estimate = TimeEstimate(  # a run against the clock knows its length
        total_steps - state.progress.step, enabled=info.is_main and not config.time_budget
    )
    if info.device.type == "cpu" and info.world_size == 1:
        state.threads = CpuThreads()
    if info.is_main:
        write_config(run_dir, config)
        write_metrics(run_dir, state.progress.history)
        if saved is not None:
            restore_best(run_dir, saved)
        print(describe(state), flush=True)
    return state


def memory_format(config: TrainConfig) -> torch.memory_format:
    """How the model's conv weights and the training images lie in memory: channels-last
    (NHWC, one pixel's channels side by side) with ``--channels_last``, else as they are."""
    return torch.channels_last if config.channels_last else torch.preserve_format


def load_resumable(config: TrainConfig, run_dir: Path, info: distributed.DistInfo) -> dict:
    """The state in ``run_dir/last.pt``, checked against ``config``: only fields that do not
    change the numbers may differ, and ``epochs`` may grow (the run is extended: its schedule is
    re-planned for the new length from the current step on)."""
    last = run_dir / "last.pt"
    saved = load_checkpoint(last, map_location=info.device)
    before = config_from_dict(saved["config"])
    conflicts = resume_conflicts(before, config)
    if conflicts:
        raise ValueError(f"--resume with a different config than {last}: {conflicts}")
    if config.epochs < before.epochs:
        raise ValueError(
            f"--epochs {config.epochs} is shorter than the run in {last} ({before.epochs} "
            "epochs): a run can be extended, not shortened; train a new run with another --out"
        )
    if config.epochs > before.epochs and info.is_main:
        print(f"extending the run from {before.epochs} to {config.epochs} epochs: the learning "
              f"rate schedule is re-planned for {config.epochs} epochs", flush=True)  # fmt: skip
    return saved


def load_data(config: TrainConfig, info: distributed.DistInfo) -> tuple[DeviceLoader, dict]:
    """This rank's training loader, and the evaluation sets on the device: "test", and "val"
    (the last ``val_split`` training images) when there is a validation split."""
    images, labels = load_cifar10(config.datapath, "train", limit=config.train_limit)
    kept = len(labels) - config.val_split
    eval_sets = {"test": load_cifar10(config.datapath, "test", limit=config.test_limit)}
    if config.val_split:
        eval_sets["val"] = images[kept:], labels[kept:]
    eval_sets = {k: (x.to(info.device), y) for k, (x, y) in eval_sets.items()}
    loader = DeviceLoader(
        images[:kept], labels[:kept], config.batch_size // info.world_size, train=True,
        device=info.device, augment=config.augment, seed=config.seed, rank=info.rank,
        world_size=info.world_size, epoch_images=config.epoch_images,
    )  # fmt: skip
    return loader, eval_sets


def restore(state: TrainState, saved: dict) -> None:
    """Load a checkpoint's weights, optimizer, schedule position, loss scaler, EMA and progress.
    A run extended to more epochs keeps the schedule planned for its new length, from the step
    it stopped at (the checkpoint's schedule is that of the old length)."""
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    planned = [copy.copy(fn) for fn in state.scheduler.lr_lambdas]  # loading overwrites them
    state.scheduler.load_state_dict(saved["scheduler"])
    if saved["config"]["epochs"] != state.config.epochs:
        state.scheduler.lr_lambdas = planned
        step = state.scheduler.last_epoch
        for group, base, factor in zip(state.optimizer.param_groups, state.scheduler.base_lrs,
                                       planned, strict=True):  # fmt: skip
            group["lr"] = base * factor(step)
    state.scaler.load_state_dict(saved["scaler"])
    if state.ema is not None:
        state.ema.module.load_state_dict(saved["ema"])
        state.ema.n_averaged.fill_(saved["ema_n_averaged"])
    state.progress = p = Progress(**saved["progress"])
    if not state.info.is_main:
        return
    if state.out_of_time:  # never without a time budget
        print(f"{state.run_dir} already holds the complete run: it used its "
              f"{state.config.time_budget:g}-minute budget; nothing to do", flush=True)  # fmt: skip
    elif not state.config.time_budget and p.epoch >= state.config.epochs:
        print(f"{state.run_dir} already holds the complete run ({p.epoch} epochs): nothing to do; "
              f"pass --epochs M (more than {p.epoch}) with --resume to extend it", flush=True)  # fmt: skip
    else:
        print(f"resuming from epoch {p.epoch + 1} (step {p.step}, batch {p.batch} of that epoch"
              + (f", {p.elapsed_s / 60:.1f} of {state.config.time_budget:g} min used"
                 if state.config.time_budget else "")
              + f") from {state.run_dir / 'last.pt'}", flush=True)  # fmt: skip


def restore_best(run_dir: Path, saved: dict) -> None:
    """Rewrite best.pt from a resumed epoch-end state that was the best so far when the run was
    killed between writing last.pt and best.pt."""
    progress = saved["progress"]
    history = progress["history"]
    if progress["batch"] or not history:
        return
    if history[-1][selection_metric(saved["config"].get("val_split"))] < progress["best_acc"]:
        return
    try:
        saved_epoch = load_checkpoint(run_dir / "best.pt")["epoch"]
    except (FileNotFoundError, CheckpointError):
        saved_epoch = None
    if saved_epoch != saved["epoch"]:
        save(run_dir / "best.pt", best_state(saved))


def compiled(state: TrainState) -> nn.Module:
    """``torch.compile(model)``, compiled now with one forward/backward on a zero batch; on any
    failure (no compiler, unsupported platform) prints why and returns the eager model. The
    model's buffers (BatchNorm statistics) are left as they were, so a compiled run resumes
    exactly."""
    model, device = state.model, state.info.device
    example = torch.zeros(state.loader.batch_size, 3, 32, 32, device=device).to(
        memory_format=memory_format(state.config)
    )
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    try:
        fast = torch.compile(model, options=compile_options(device))
        with autocast(state.info.device, state.amp_dtype):
            fast(example).float().sum().backward()
    except Exception as e:  # compilation can fail in many backend-specific ways
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"torch.compile failed ({type(e).__name__}: {first_line}); training eagerly",
              file=sys.stderr)  # fmt: skip
        fast = model
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    return fast


def describe(state: TrainState) -> str:
    """One line: the model, the data, the steps, the precision and the schedule."""
    c, info = state.config, state.info
    return (
        f"{c.model}: {sum(p.numel() for p in state.model.parameters()):,} parameters, "
        f"{len(state.loader.labels):,} train"
        + (f" (a random {c.epoch_images:,} per epoch)" if c.epoch_images else "")
        + " / "
        f"{len(state.eval_sets['test'][1]):,} test images, {len(state.loader)} steps per epoch "
        + (f"for a {c.time_budget:g}-minute budget" if c.time_budget else f"x {c.epochs} epochs")
        + f" on {info.device}"
        + (f" x {info.world_size} processes" if info.world_size > 1 else "")
        + (f", {state.amp_dtype}" if state.amp_dtype else "")
        + f"; lr {c.lr:g}: {c.cycles} x ("
        + (f"warmup {c.warmup_epochs / c.epochs:.1%} of the time + cosine), on the clock"
           if c.time_budget
           else f"warmup {c.warmup_epochs:g} epochs + cosine), stepped per {c.schedule_unit}")
    )  # fmt: skip


def epochs_left(state: TrainState) -> Iterator[int]:
    """The epochs still to train: up to ``epochs`` or, with a time budget, until it is used (the
    last epoch then ends where the time did)."""
    epoch = state.progress.epoch
    while not state.out_of_time if state.config.time_budget else epoch < state.config.epochs:
        yield epoch
        epoch += 1


def epoch_label(config: TrainConfig, epoch: int) -> str:
    """``"epoch 3/11"``; ``"epoch 3"`` for a run against the clock, whose length is its time."""
    return f"epoch {epoch:>3}" + ("" if config.time_budget else f"/{config.epochs}")


# ---------------------------------------------------------------- one epoch, one step


def train_epoch(state: TrainState, epoch: int) -> bool:
    """The batches of ``epoch`` from where the run stands, or up to the step that used the time
    budget; False if a stop signal ended it early (last.pt then holds the step reached)."""
    c, p = state.config, state.progress
    state.model.train()
    state.loader.set_epoch(epoch, start_batch=p.batch)
    state.bar = tqdm(total=len(state.loader), initial=p.batch, desc=epoch_label(c, epoch + 1),
                     disable=not show_progress(state), leave=False, dynamic_ncols=True)  # fmt: skip
    for batch, (images, labels) in enumerate(state.loader, start=p.batch):
        lr = state.lr
        images = images.to(state.info.device, non_blocking=True,
                           memory_format=memory_format(c))  # fmt: skip
        labels = labels.to(state.info.device, non_blocking=True)
        loss, stop, p.elapsed_s = train_step(state, images, labels, epoch, batch)
        count_loss(state, loss, epoch, batch, lr)
        p.step, p.batch = p.step + 1, batch + 1
        after_step(state, loss, lr)
        every = c.checkpoint_every
        if stop or (every and p.step % every == 0 and p.batch < len(state.loader)):
            save_last(state)
        if stop:
            state.bar.close()
            if state.info.is_main:
                print(f"stopped at step {p.step}; continue with --resume (checkpoint "
                      f"{state.run_dir / 'last.pt'})", file=sys.stderr)  # fmt: skip
            return False
        if state.out_of_time:
            break
    state.bar.close()
    return True


def train_step(state: TrainState, images: torch.Tensor, labels: torch.Tensor, epoch: int,
               batch: int) -> tuple[float, bool, float]:  # fmt: skip
    """One optimizer step on images (B, 3, 32, 32) and labels (B,). Returns (mean loss over
    processes, whether any process was asked to stop, the run's elapsed seconds on the main
    process's clock); all three come from one all-reduce, so every process takes the same
    decisions. No step is taken when the loss is not finite."""
    c, rank = state.config, state.info.rank
    torch.manual_seed(derive_seed(c.seed, epoch, batch, rank, "dropout"))
    mix_rng = torch.Generator().manual_seed(derive_seed(c.seed, epoch, batch, rank, "mix"))
    y_a = y_b = labels
    lam = 1.0
    if c.mix != "none" and torch.rand((), generator=mix_rng).item() < c.mix_prob:
        images, y_a, y_b, lam = MIXERS[c.mix](images, labels, c.mix_alpha, mix_rng)
    with autocast(state.info.device, state.amp_dtype):
        logits = state.forward(images)
    loss = mixed_loss(logits.float(), y_a, y_b, lam, c.label_smoothing)
    clock = time.perf_counter() - state.clock_zero if state.info.is_main else 0.0
    signal_and_clock = torch.tensor([float(state.stop.signum), clock], device=loss.device)
    flags = torch.cat([loss.detach().reshape(1), signal_and_clock])
    loss_sum, stop_votes, elapsed = distributed.all_reduce_sum(flags).tolist()  # one host sync
    loss_value = loss_sum / state.info.world_size
    if math.isfinite(loss_value):
        state.scaler.scale(loss).backward()
        if c.grad_clip:
            state.scaler.unscale_(state.optimizer)
            nn.utils.clip_grad_norm_(state.model.parameters(), c.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        if state.ema is not None:
            state.ema.update_parameters(state.model)
    state.optimizer.zero_grad(set_to_none=True)
    return loss_value, stop_votes > 0, elapsed


def mixed_loss(
    logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: float, smoothing: float
) -> torch.Tensor:
    """``lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)``, label-smoothed; logits (B, K)."""
    loss = F.cross_entropy(logits, y_a, label_smoothing=smoothing)
    if lam == 1.0:
        return loss
    return lam * loss + (1 - lam) * F.cross_entropy(logits, y_b, label_smoothing=smoothing)


def count_loss(state: TrainState, loss: float, epoch: int, batch: int, lr: float) -> None:
    """Add a finite loss to the epoch's mean; a non-finite one stops the run (naming the step,
    the lr and the last good checkpoint) or, with ``on_nonfinite="skip"``, is counted."""
    p = state.progress
    if math.isfinite(loss):
        p.epoch_loss_sum += loss
        p.epoch_batches += 1
    elif state.config.on_nonfinite == "skip":
        p.skipped += 1
    else:
        last = state.run_dir / "last.pt"
        raise TrainingError(
            f"non-finite loss ({loss}) at step {p.step + 1} (epoch {epoch + 1}, batch "
            f"{batch + 1}), lr {lr:.3g}; last good checkpoint: "
            + (str(last) if last.exists() else "none yet")
            + " (lower --lr, set --grad_clip, or --on_nonfinite skip)"
        )


def after_step(state: TrainState, loss: float, lr: float) -> None:
    """Per-step bookkeeping: the schedule (when stepped per step, or on the clock), the time
    estimate, the CPU thread count and the progress bar."""
    if state.config.time_budget:
        follow_clock(state)
    elif state.config.schedule_unit == "step":
        state.scheduler.step()
    state.estimate.step()
    if state.threads is not None and state.threads.update():
        print(f"\nother processes use {state.threads.others:.1f} of {state.threads.cores} cores: "
              f"training with {torch.get_num_threads()} thread(s)", file=sys.stderr)  # fmt: skip
    state.bar.update(1)
    if state.progress.batch % 10 == 1:
        state.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")


def follow_clock(state: TrainState) -> None:
    """Set the learning rate of a run with a time budget: the schedule at ``t = f * length``,
    where ``f`` is the fraction of the budget used and ``length`` the schedule's whole length
    (``epochs``, in the schedule's unit). Warmup and cosine thus stretch over the budget, however
    fast the machine runs, and ``f = 1`` ends the cosine at ``min_lr``."""
    fraction = min(state.progress.elapsed_s / (60 * state.config.time_budget), 1.0)
    scheduler = state.scheduler
    for group, base, schedule in zip(state.optimizer.param_groups, scheduler.base_lrs,
                                     scheduler.lr_lambdas, strict=True):  # fmt: skip
        group["lr"] = base * schedule(fraction * schedule.cycle_length * state.config.cycles)


def show_progress(state: TrainState) -> bool:
    """Progress bars on the main process when asked, or when stderr is a terminal ("auto")."""
    setting = state.config.progress
    return state.info.is_main and (setting == "on" or (setting == "auto" and sys.stderr.isatty()))


# ---------------------------------------------------------------- end of an epoch


def end_epoch(state: TrainState, epoch: int, started: float, train_seconds: float) -> dict:
    """Step a per-epoch schedule, evaluate, append the epoch's metrics, write last.pt (and
    best.pt when the selection metric improved) and print one line; returns the metrics.
    ``started``: ``time.perf_counter()`` at the epoch's start; ``train_seconds``: its batches."""
    c, p = state.config, state.progress
    lr = last_step_lr(state)
    if c.schedule_unit == "epoch" and not c.time_budget:
        state.scheduler.step()
    record = {"epoch": epoch + 1, "step": p.step,
              "train_loss": p.epoch_loss_sum / max(p.epoch_batches, 1)} | evaluate(state)  # fmt: skip
    selected = record[selection_metric(c.val_split)]
    p.best_acc = max(p.best_acc, selected)
    record |= {
        "best_acc": p.best_acc,
        "lr": lr,
        "seconds": time.perf_counter() - started,
        "train_images_per_s": p.batch * c.batch_size / train_seconds,  # a last epoch may be cut
        "skipped_steps": p.skipped,
    }
    p.history.append(record)
    p.epoch, p.batch, p.epoch_loss_sum, p.epoch_batches = epoch + 1, 0, 0.0, 0
    if state.info.is_main:
        last = save_last(state)
        if selected >= p.best_acc:
            save(state.run_dir / "best.pt", best_state(last))
        append_metrics(state.run_dir, record)
        print(epoch_line(c, record), flush=True)
    return record


def last_step_lr(state: TrainState) -> float:
    """The learning rate of the epoch's last optimizer step: the current one for a schedule
    stepped per epoch (or, on the clock, the one set just after that step); one schedule step
    back for a schedule stepped per step, which has already moved on to the next step's."""
    if state.config.schedule_unit == "epoch" or state.config.time_budget:
        return state.lr
    scheduler = state.scheduler
    return scheduler.base_lrs[0] * scheduler.lr_lambdas[0](scheduler.last_epoch - 1)


def evaluate(state: TrainState) -> dict:
    """Loss and accuracy on the test set (and accuracy on the validation split), of the EMA
    weights when there are some, with flip TTA when the run asks for it."""
    c = state.config
    model = state.ema.module if state.ema is not None else state.model
    options = dict(tta=c.tta, autocast_dtype=state.amp_dtype)
    test = evaluate_model(model, *state.eval_sets["test"], label_smoothing=c.label_smoothing,
                          **options)  # fmt: skip
    result = {"test_loss": test["loss"], "test_acc": test["accuracy"]}
    if "val" in state.eval_sets:  # metrics.csv shows nan without one
        result["val_acc"] = evaluate_model(model, *state.eval_sets["val"], **options)["accuracy"]
    return result


def epoch_line(config: TrainConfig, record: dict) -> str:
    """The line printed at the end of an epoch."""
    return (
        f"{epoch_label(config, record['epoch'])}  train_loss {record['train_loss']:.4f}  "
        f"test_loss {record['test_loss']:.4f}  test_acc {100 * record['test_acc']:.2f}%  "
        + (f"val_acc {100 * record['val_acc']:.2f}%  " if "val_acc" in record else "")
        + f"lr {record['lr']:.3g}  {record['seconds']:.1f}s"
    )


# ---------------------------------------------------------------- checkpoints


def checkpoint_state(state: TrainState) -> dict:
    """What last.pt holds: weights (and EMA), optimizer, schedule, loss scaler, progress and the
    config; plain tensors, numbers, strings, lists and dicts (``torch.load(weights_only=True)``)."""
    ema = state.ema
    return {
        "model": state.model.state_dict(),
        "ema": ema.module.state_dict() if ema is not None else None,
        "ema_n_averaged": int(ema.n_averaged) if ema is not None else 0,
        "model_name": state.config.model,
        "model_config": dataclasses.asdict(state.model.config),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "epoch": state.progress.epoch,
        "step": state.progress.step,
        "progress": dataclasses.asdict(state.progress),
        "world_size": state.info.world_size,
        "config": dataclasses.asdict(state.config),
    }


def save_last(state: TrainState) -> dict | None:
    """Write last.pt on the main process; returns what was written (None on the others)."""
    if not state.info.is_main:
        return None
    written = checkpoint_state(state)
    save(state.run_dir / "last.pt", written)
    return written


def best_state(saved: dict) -> dict:
    """The best.pt form of a checkpoint state: weights and progress, no optimizer/scheduler."""
    return {**saved, "optimizer": None, "scheduler": None}


def save(path: Path, saved: dict) -> None:
    """``save_checkpoint``; a failed write (disk full, read-only directory) stops the run with
    a TrainingError saying what is left and what to do."""
    try:
        save_checkpoint(path, saved)
    except OSError as e:
        raise TrainingError(
            f"{e}; the run stopped at step {saved['step']}. Free disk space or make "
            f"{path.parent} writable, then continue with --resume"
        ) from e


# ---------------------------------------------------------------- time estimate


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
