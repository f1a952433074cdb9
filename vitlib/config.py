"""Training configuration: one frozen dataclass with every hyperparameter, three presets and
one validator.

``TrainConfig()`` is the reference recipe (RECIPE.md) without its off-by-one scheduler quirk.
Fields with a fixed set of values are ``Literal`` types; ``validate(config)`` checks every field
(type, choice, range) before any work starts and raises one ``ValueError`` listing every bad
value with what is allowed. Which device and precision "auto" means is ``vitlib.hardware``'s job.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from .augment import Policy
from .hardware import resolve_device, resolve_precision

TRAIN_SIZE, TEST_SIZE = 50_000, 10_000


def _f(default, help: str):
    """A dataclass field with its ``--help`` text (read by ``vitlib.train.build_parser``)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    preset: str = _f("reference", "preset the other defaults come from (default: reference)")
    # model
    model: str = _f("vit_cifar10_patch2_input32", "model name (vitlib.list_models())")
    model_overrides: dict = _f({}, "ModelConfig fields replacing the model's, e.g. depth=2 dim=64")
    # data
    dataset: Literal["CIFAR-10"] = _f("CIFAR-10", "dataset (only CIFAR-10)")
    datapath: str | None = _f(None, "folder holding cifar-10-batches-py/ (default: $VITLIB_DATA)")
    train_limit: int | None = _f(None, "train on the first N training images only")
    test_limit: int | None = _f(None, "evaluate on the first N test images only")
    val_split: int = _f(
        0,
        "hold out the last N training images to validate on: best.pt is then selected on them, "
        "not on the test set (0: no validation set; best.pt is selected on the test set)",
    )
    epoch_images: int | None = _f(
        None,
        "train on a fresh random N of the training images each epoch (default: all of them): "
        "shorter epochs, so more evaluations and a finer curve for the same images seen",
    )
    augment: Policy = _f(
        "recipe",
        "train augmentation: 'recipe' (TrivialAugmentWide, flip, crop, random erasing: RECIPE.md), "
        "'flip-crop' (flip and padded crop only) or 'none'",
    )
    mix: Literal["cutmix", "mixup", "none"] = _f("cutmix", "batch mixing: cutmix, mixup or none")
    mix_alpha: float = _f(0.5, "Beta(alpha, alpha) of the mixing ratio")
    mix_prob: float = _f(1.0, "fraction of batches that are mixed")
    # optimisation
    epochs: int = _f(200, "training epochs")
    time_budget: float = _f(
        0.0,
        "minutes of wall time for the run, start-up included (0: off): training stops when they "
        "are used, and the learning-rate schedule follows the clock (its position is the fraction "
        "of the budget used; --epochs then sets only its shape: warmup_epochs / epochs of the "
        "budget is warmup)",
    )
    batch_size: int = _f(128, "global batch size (split evenly over DDP processes)")
    lr: float = _f(1e-3, "peak learning rate (AdamW)")
    min_lr: float = _f(1e-5, "learning rate at the start of warmup and the end of each cosine")
    warmup_epochs: float = _f(10.0, "linear warmup at the start of each cycle, in epochs")
    cycles: int = _f(4, "warmup + cosine cycles (periodic re-warming), each epochs / cycles long")
    schedule_unit: Literal["epoch", "step"] = _f(
        "epoch", "step the schedule once per 'epoch' or per optimizer 'step'"
    )
    betas: tuple[float, float] = _f((0.9, 0.999), "AdamW betas")
    eps: float = _f(1e-8, "AdamW epsilon")
    weight_decay: float = _f(0.1, "AdamW weight decay, on Conv2d/Linear weights only")
    label_smoothing: float = _f(0.1, "label smoothing of the cross-entropy")
    grad_clip: float = _f(0.0, "clip the global gradient norm to this value (0: off)")
    ema: float = _f(0.0, "decay of an EMA of the weights used for evaluation (0: off)")
    tta: bool = _f(False, "evaluate with horizontal-flip test-time augmentation")
    # hardware and run
    device: str = _f("auto", "auto (cuda if available), cpu, cuda, cuda:N or mps")
    precision: Literal["fp32", "bf16", "fp16", "auto"] = _f(
        "fp32",
        "fp32, bf16, fp16 (CUDA) or auto (CUDA: bf16 from compute capability 8.0, else fp16; CPU: fp32)",
    )
    compile: bool = _f(False, "torch.compile the model (falls back to eager with a message)")
    channels_last: bool = _f(
        False, "keep conv weights and training images channels-last (NHWC): a speed setting"
    )
    seed: int = _f(0, "seed of all randomness (init, shuffle, augmentation, dropout)")
    out: str = _f("runs/reference", "run directory (config.json, metrics, checkpoints)")
    resume: bool = _f(False, "continue the run in --out from its last.pt")
    checkpoint_every: int = _f(
        0, "also write last.pt every N optimizer steps, for preemptible machines (0: per epoch)"
    )
    on_nonfinite: Literal["stop", "skip"] = _f(
        "stop", "on a NaN/inf loss: 'stop' the run or 'skip' the step"
    )
    progress: Literal["auto", "on", "off"] = _f(
        "auto", "progress bars: auto (when interactive), on or off"
    )


PRESETS: dict[str, dict] = {
    # RECIPE.md as recorded, minus the scheduler quirk (epoch 1 starts at min_lr, peak at 11).
    "reference": {},
    # Same model and augmentation, built for a modern GPU; not yet run on one (no GPU has been
    # lent to this project), so the choices below are expectations, not measurements. A 4x
    # larger batch fills the GPU; the lr grows with sqrt(batch) (1e-3 * sqrt(4)), a rule often
    # used for Adam (Malladi et al. 2022), where DeiT scales linearly (lr 5e-4 * batch / 512).
    # One warmup + cosine stepped per optimizer step: restarts only throw away progress when
    # the run length is fixed in advance. bf16 autocast and torch.compile are expected to raise
    # throughput on tensor cores (bench/throughput.py will measure it). EMA and flip TTA stay
    # off so the number is comparable with the reference's single view of the final weights
    # (--ema 0.9999 / --tta turn them on; their gain here is unmeasured).
    "fast": {
        "out": "runs/fast",
        "batch_size": 512,
        "lr": 2e-3,
        "cycles": 1,
        "schedule_unit": "step",
        "precision": "auto",
        "compile": True,
    },
    # The small model of the same family (vitlib/model.py: 0.66M parameters) for 2 CPU cores:
    # 11 epochs of one warmup + cosine in about 20 minutes (20.3 measured for the shipped model:
    # 1083.7 s in the epochs, the rest start-up and compiling with a cold cache; 82.51%, 83.87%
    # with flip TTA). Measured at equal wall time (bench/RESULTS.md, 10-minute budgets on 2
    # cores): torch.compile trains about 1.25x faster per step than eager and reached 75.89%
    # against 73.04%; label smoothing 0.1 beat none (75.33%); width 192 trained slower and lost
    # (72.83%). bf16 autocast: 1.6x the fp32 throughput on CPUs with AVX-512-bf16 or AMX (330 vs
    # 210 images/s on the earlier small model). Flip and padded crop only, no mixing: the
    # recipe's TrivialAugment, erasing and CutMix are expected to pay off only in long runs (not
    # measured here at equal wall time). lr 3e-3 beat 2e-3 in planned 2.5-minute runs (62.4% vs
    # 60.0%).
    "cpu-quick": {
        "out": "runs/cpu-quick",
        "model": "vit_cifar10_small",
        "device": "cpu",
        "precision": "bf16",
        "compile": True,
        "epochs": 11,
        "lr": 3e-3,
        "warmup_epochs": 0.5,
        "cycles": 1,
        "schedule_unit": "step",
        "augment": "flip-crop",
        "mix": "none",
        "weight_decay": 0.05,
    },
}


SCHEDULE_FIELDS = ("cycles", "warmup_epochs", "schedule_unit")
GPU_PRESETS = ("reference", "fast")  # refused on a CPU unless --device cpu says so


def preset_config(name: str, **overrides) -> TrainConfig:
    """``TrainConfig`` of a preset with ``overrides`` applied (not validated yet).

    A run length other than the preset's (``epochs``) with none of ``SCHEDULE_FIELDS`` given
    gets the preset's schedule fitted to it by ``fit_schedule``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
    config = TrainConfig(**{"preset": name, **PRESETS[name], **overrides})
    if "epochs" in overrides and not any(f in overrides for f in SCHEDULE_FIELDS):
        config = dataclasses.replace(
            config, **fit_schedule(TrainConfig(**PRESETS[name]), config.epochs)
        )
    return config


def fit_schedule(preset: TrainConfig, epochs: int) -> dict:
    """The schedule of ``preset`` compressed or stretched to a run of ``epochs`` epochs:
    ``{"cycles", "warmup_epochs", "schedule_unit"}``.

    The warmup keeps its share of a cycle (reference: 10 of 50 epochs). The preset's number of
    cycles is kept when it divides ``epochs`` and each warmup still lasts a whole epoch; otherwise
    the run is one cycle. A warmup shorter than one epoch cannot be drawn by a schedule stepped
    once per epoch (epoch 1 would run at ``min_lr`` and epoch 2 past the peak), so it is then
    stepped per optimizer step. Example: the reference recipe for 4 epochs is 1 cycle with a
    0.8-epoch warmup, stepped per step. Invalid ``epochs`` are left to ``validate``."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        return {}
    share = preset.warmup_epochs * preset.cycles / preset.epochs
    cycles = preset.cycles
    if epochs % cycles or share * epochs / cycles < 1:
        cycles = 1
    warmup = share * epochs / cycles
    unit = "step" if warmup < 1 else preset.schedule_unit
    return {"cycles": cycles, "warmup_epochs": warmup, "schedule_unit": unit}


def auto_preset() -> str:
    """``"reference"`` (RECIPE.md) when a CUDA GPU is available, else ``"cpu-quick"``."""
    return "reference" if torch.cuda.is_available() else "cpu-quick"


def selection_metric(val_split: int) -> str:
    """The metric best.pt is selected on: ``val_acc`` with a validation split, else ``test_acc``."""
    return "val_acc" if val_split else "test_acc"


def choices(name: str) -> tuple | None:
    """The values a ``Literal`` field of ``TrainConfig`` allows (None for other fields)."""
    hint = typing.get_type_hints(TrainConfig)[name]
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def _type_ok(value, hint) -> bool:
    """Whether ``value`` fits the type hint ``hint`` (unions, Literal, tuples, int vs float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if origin is Literal:
        return isinstance(value, str)  # which string: a range check, with the allowed values
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        args = typing.get_args(hint)
        return (
            isinstance(value, (tuple, list))
            and len(value) == len(args)
            and all(_type_ok(v, a) for v, a in zip(value, args, strict=True))
        )
    return isinstance(value, origin or hint)


def validate(config: TrainConfig, world_size: int = 1) -> None:
    """Raise one ValueError listing every invalid field of ``config`` and its allowed values:
    first the types, then each field's range (skipped for a field whose inputs are already
    reported), then the model, the device and the data folder."""
    hints = typing.get_type_hints(TrainConfig)
    errors = [
        f"{f.name}={getattr(config, f.name)!r} has the wrong type: expected {hints[f.name]}"
        for f in dataclasses.fields(config)
        if not _type_ok(getattr(config, f.name), hints[f.name])
    ]
    for name, ok, allowed, needs in _ranges(config, world_size):
        if any(e.startswith(f"{n}=") for n in (name, *needs) for e in errors):
            continue
        if not ok():
            errors.append(f"{name}={getattr(config, name)!r} is out of range: {allowed}")
    if not any(e.startswith(("model=", "model_overrides=")) for e in errors):
        _check_model(config, errors)
    if not any(e.startswith(("device=", "precision=")) for e in errors):
        _check_device(config, errors)
    if not any(e.startswith("datapath=") for e in errors):
        _check_datapath(config, errors)
    if errors:
        raise ValueError("invalid training config:\n  " + "\n  ".join(errors))


def _ranges(c: TrainConfig, world_size: int) -> list[tuple]:
    """(field, check, allowed values, fields the check also reads) for every ranged field."""
    n_images = c.train_limit if isinstance(c.train_limit, int) else TRAIN_SIZE
    n_train = n_images - c.val_split if isinstance(c.val_split, int) else n_images
    per_epoch = min(n_train, c.epoch_images) if isinstance(c.epoch_images, int) else n_train
    literal = [
        (name, lambda name=name: getattr(c, name) in choices(name), f"one of {list(choices(name))}", ())
        for name in (f.name for f in dataclasses.fields(TrainConfig)) if choices(name)
    ]  # fmt: skip
    return literal + [
        ("preset", lambda: c.preset in PRESETS, f"one of {sorted(PRESETS)}", ()),
        ("epochs", lambda: c.epochs >= 1, "an integer >= 1", ()),
        ("time_budget", lambda: 0 <= c.time_budget < math.inf, "minutes >= 0 (0: off)", ()),
        ("train_limit", lambda: c.train_limit is None or 1 <= c.train_limit <= TRAIN_SIZE,
         f"1..{TRAIN_SIZE} or None", ()),
        ("test_limit", lambda: c.test_limit is None or 1 <= c.test_limit <= TEST_SIZE,
         f"1..{TEST_SIZE} or None", ()),
        ("val_split", lambda: 0 <= c.val_split < n_images,
         f"0..{n_images - 1} (held out of the {n_images} training images)", ("train_limit",)),
        ("epoch_images", lambda: c.epoch_images is None or 1 <= c.epoch_images <= n_train,
         f"1..{n_train} (the training images used) or None", ("train_limit", "val_split")),
        ("batch_size", lambda: 1 <= c.batch_size <= per_epoch and c.batch_size % world_size == 0,
         f"1..{per_epoch} (the training images of one epoch) and divisible by the {world_size} "
         "process(es)", ("train_limit", "val_split", "epoch_images")),
        ("mix_alpha", lambda: 0 < c.mix_alpha < math.inf, "a finite number > 0", ()),
        ("mix_prob", lambda: 0 <= c.mix_prob <= 1, "[0, 1]", ()),
        ("lr", lambda: 0 < c.lr < math.inf, "a finite number > 0", ()),
        ("min_lr", lambda: 0 <= c.min_lr <= c.lr, f"[0, lr={c.lr}]", ("lr",)),
        ("cycles", lambda: 1 <= c.cycles <= c.epochs, f"1..epochs={c.epochs}", ("epochs",)),
        ("cycles", lambda: c.schedule_unit != "epoch" or c.epochs % c.cycles == 0,
         f"a divisor of epochs={c.epochs} when schedule_unit='epoch'",
         ("epochs", "schedule_unit")),
        ("warmup_epochs", lambda: 0 <= c.warmup_epochs < c.epochs / c.cycles,
         "[0, epochs / cycles): shorter than one cycle", ("epochs", "cycles")),
        ("betas", lambda: all(0 <= b < 1 for b in c.betas), "two numbers in [0, 1)", ()),
        ("eps", lambda: 0 < c.eps < 1, "(0, 1)", ()),
        ("weight_decay", lambda: 0 <= c.weight_decay < math.inf, "a finite number >= 0", ()),
        ("label_smoothing", lambda: 0 <= c.label_smoothing < 1, "[0, 1)", ()),
        ("grad_clip", lambda: 0 <= c.grad_clip < math.inf, "a finite number >= 0 (0: off)", ()),
        ("ema", lambda: 0 <= c.ema < 1, "[0, 1) (0: off; typical 0.999-0.9999)", ()),
        ("seed", lambda: c.seed >= 0, "an integer >= 0", ()),
        ("checkpoint_every", lambda: c.checkpoint_every >= 0, "an integer >= 0 (0: per epoch)",
         ()),
        ("out", lambda: len(c.out) > 0, "a non-empty directory path", ()),
    ]  # fmt: skip


def _check_model(c: TrainConfig, errors: list[str]) -> None:
    from .model import PRESETS as MODELS
    from .model import model_config

    try:
        model_config(c.model, **c.model_overrides)
    except (TypeError, ValueError) as e:
        name = "model" if c.model not in MODELS else "model_overrides"
        errors.append(f"{name}={getattr(c, name)!r} is invalid: {e}")


def _check_device(c: TrainConfig, errors: list[str]) -> None:
    try:
        device = resolve_device(c.device)
    except RuntimeError:
        errors.append(
            f"device={c.device!r} is unknown: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        )
        return
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            errors.append(
                f"device={c.device!r} is not available: no CUDA GPU found (use --device cpu)"
            )
        elif device.index is not None and device.index >= count:
            errors.append(f"device={c.device!r} is not available: only {count} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        errors.append(f"device={c.device!r} is not available: MPS not found (use --device cpu)")
    elif device.type not in ("cpu", "cuda", "mps"):
        errors.append(f"device={c.device!r} is not supported: use 'auto', 'cpu', 'cuda' or 'mps'")
    if c.preset in GPU_PRESETS and c.device == "auto" and device.type == "cpu":
        errors.append(
            f"preset={c.preset!r} is built for a GPU and no GPU was found: use --preset cpu-quick "
            "on a CPU, or pass --device cpu to run it here anyway (it prints its projected time "
            "after its first steps)"
        )
    if resolve_precision(c.precision, device) == "fp16" and device.type != "cuda":
        errors.append(
            f"precision='fp16' needs a CUDA device, got device={c.device!r} (use bf16 or fp32)"
        )


def _check_datapath(c: TrainConfig, errors: list[str]) -> None:
    root = c.datapath or os.environ.get("VITLIB_DATA")
    if not root:
        errors.append(
            "datapath=None and VITLIB_DATA is unset: pass --datapath DIR (the folder holding cifar-10-batches-py/)"
        )
    elif not (Path(root).expanduser() / "cifar-10-batches-py").is_dir():
        errors.append(
            f"datapath={root!r} has no cifar-10-batches-py/ folder: point it at the folder that holds it"
        )


# Fields a resumed run may change: they do not alter the numbers the run computes (on one device),
# or, for epochs, extend the run (vitlib.loop.load_resumable refuses a shorter one).
RESUME_MAY_CHANGE = frozenset(
    {
        "resume",
        "out",
        "datapath",
        "device",
        "compile",
        "channels_last",
        "progress",
        "checkpoint_every",
        "epochs",
    }
)


# Fields of earlier versions, ignored when their config.json or checkpoints are read: the
# per-image PIL loader ("loader", "num_workers") moved to bench/pil_loader.py.
RETIRED_FIELDS = frozenset({"loader", "num_workers"})


def config_from_dict(values: dict) -> TrainConfig:
    """Rebuild a ``TrainConfig`` from ``dataclasses.asdict`` / JSON output (lists -> tuples)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in values.items() if k not in RETIRED_FIELDS}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown training config field(s) {unknown}; valid: {sorted(names)}")
    if isinstance(values.get("betas"), list):
        values["betas"] = tuple(values["betas"])
    return TrainConfig(**values)


def resume_conflicts(saved: TrainConfig, current: TrainConfig) -> list[str]:
    """Fields that differ between a run's saved config and a resuming config, beyond
    ``RESUME_MAY_CHANGE``, as "name: saved -> current" strings."""
    return [
        f"{f.name}: {getattr(saved, f.name)!r} -> {getattr(current, f.name)!r}"
        for f in dataclasses.fields(TrainConfig)
        if f.name not in RESUME_MAY_CHANGE and getattr(saved, f.name) != getattr(current, f.name)
    ]
