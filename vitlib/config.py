"""Training configuration: one frozen dataclass (``TrainConfig()`` is the reference recipe), the
training presets, the command line that fills it, and ``validate``, which checks every field
before any work starts and raises one ``ValueError`` listing every bad value."""

import argparse
import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from .augment import Policy
from .data import DATASETS, locate
from .hardware import resolve_device, resolve_precision

TRAIN_SIZE, TEST_SIZE = 50_000, 10_000


def _f(default, help: str):
    """A dataclass field with its ``--help`` text (read by ``build_parser``)."""
    value = {"default_factory": dict} if isinstance(default, dict) else {"default": default}
    return field(**value, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    preset: str = _f("reference", "preset the other defaults come from (default: reference)")
    # model
    model: str = _f("vit_cifar10_patch2_input32", "model name (vitlib.list_models())")
    model_overrides: dict = _f({}, "ModelConfig fields replacing the model's, e.g. depth=2 dim=64")
    # data
    dataset: Literal["CIFAR-10", "CIFAR-100", "SVHN", "CINIC-10", "Tiny-ImageNet"] = _f(
        "CIFAR-10", "dataset, read from its official layout (vitlib.data.DATASETS)")
    datapath: str | None = _f(None, "folder holding the dataset's folder, e.g. cifar-10-batches-py/ "
                                    "(default: $VITLIB_DATA)")  # fmt: skip
    train_limit: int | None = _f(None, "train on the first N training images only")
    test_limit: int | None = _f(None, "evaluate on the first N test images only")
    val_split: int = _f(0, "select best.pt on N validation images: the last N training images, "
                           "or CINIC-10's valid/ (0: select on the test set)")  # fmt: skip
    epoch_images: int | None = _f(None, "train on a fresh random N of the training images each "
                                        "epoch (default: all): more evaluations per image seen")  # fmt: skip
    augment: Policy = _f("recipe", "train augmentation: 'recipe' (TrivialAugmentWide, flip, crop, "
                                   "random erasing: RECIPE.md), 'flip-crop' or 'none'")  # fmt: skip
    mix: Literal["cutmix", "none"] = _f("cutmix", "batch mixing: cutmix or none")
    mix_alpha: float = _f(0.5, "Beta(alpha, alpha) of the mixing ratio")
    mix_prob: float = _f(1.0, "fraction of batches that are mixed")
    # optimisation
    epochs: int = _f(200, "training epochs")
    time_budget: float = _f(0.0, "minutes of wall time for the run, start-up included (0: off); "
                                 "the lr schedule then follows the clock, --epochs its shape")  # fmt: skip
    batch_size: int = _f(128, "global batch size (split evenly over DDP processes)")
    optimizer: Literal["adamw", "sgd"] = _f("adamw", "adamw, or sgd with momentum 0.9 (a CNN's)")
    lr: float = _f(1e-3, "peak learning rate")
    min_lr: float = _f(1e-5, "learning rate at the start of warmup and the end of each cosine")
    warmup_epochs: float = _f(10.0, "linear warmup at the start of each cycle, in epochs")
    cycles: int = _f(4, "warmup + cosine cycles (periodic re-warming), each epochs / cycles long")
    schedule_unit: Literal["epoch", "step"] = _f("epoch", "new lr every 'epoch' or every 'step'")
    betas: tuple[float, float] = _f((0.9, 0.999), "AdamW betas")
    eps: float = _f(1e-8, "AdamW epsilon")
    weight_decay: float = _f(0.1, "AdamW weight decay, on Conv2d/Linear weights only")
    label_smoothing: float = _f(0.1, "label smoothing of the cross-entropy")
    grad_clip: float = _f(0.0, "clip the global gradient norm to this value (0: off)")
    ema: float = _f(0.0, "decay of an EMA of the weights used for evaluation (0: off)")
    tta: bool = _f(False, "evaluate with horizontal-flip test-time augmentation")
    # hardware and run
    device: str = _f("auto", "auto (cuda if available), cpu, cuda, cuda:N or mps")
    precision: Literal["fp32", "bf16", "fp16", "auto"] = _f("fp32", "fp32, bf16, fp16 (CUDA) or "
        "auto (CUDA: bf16 from compute capability 8.0, else fp16; CPU: fp32)")  # fmt: skip
    compile: bool = _f(False, "torch.compile the model (falls back to eager with a message)")
    channels_last: bool = _f(False, "channels-last (NHWC) conv weights and images: a speed setting")
    seed: int = _f(0, "seed of all randomness (init, shuffle, augmentation, dropout)")
    out: str = _f("runs/reference", "run directory (config.json, metrics, checkpoints)")
    resume: bool = _f(False, "continue the run in --out from its last.pt")
    checkpoint_every: int = _f(0, "also write last.pt every N steps, for preemptible machines")
    on_nonfinite: Literal["stop", "skip"] = _f("stop", "on a NaN/inf loss: 'stop' the run or "
                                                       "'skip' the step")  # fmt: skip
    progress_bar: Literal["auto", "on", "off"] = _f("auto", "a progress bar with the time left: "
                                                    "auto (on a terminal), on or off")  # fmt: skip


# The training presets (recipes): overrides of TrainConfig(). Why each value: docs/training.md.
# fmt: off
PRESETS: dict[str, dict] = {
    # RECIPE.md as it ran, without its one-epoch lag (epoch 1 at min_lr, the peak at epoch 11).
    "reference": {},
    # Same model and augmentation for a modern GPU; never run yet (no GPU was lent), so these are
    # expectations: batch 512, lr scaled by sqrt(4), one warmup + cosine per step, bf16, compiled.
    "fast": {"out": "runs/fast", "batch_size": 512, "lr": 2e-3, "cycles": 1,
             "schedule_unit": "step", "precision": "auto", "compile": True},
    # The small model for 2 CPU cores: 11 epochs in about 20 minutes (82.51% measured); every
    # choice was measured at equal wall time (bench/RESULTS.md).
    "cpu-quick": {"out": "runs/cpu-quick", "model": "vit_cifar10_small", "device": "cpu",
                  "precision": "bf16", "compile": True, "epochs": 11, "lr": 3e-3,
                  "warmup_epochs": 0.5, "cycles": 1, "schedule_unit": "step",
                  "augment": "flip-crop", "mix": "none", "weight_decay": 0.05},
}
# fmt: on
SCHEDULE_FIELDS = ("cycles", "warmup_epochs", "schedule_unit")
GPU_PRESETS = ("reference", "fast")  # refused on a CPU unless --device cpu says so
# Fields a resumed run may change: they do not alter the numbers the run computes (on one
# device), or, for epochs, extend the run (a shorter one is refused).
RESUME_MAY_CHANGE = frozenset({"resume", "out", "datapath", "device", "compile", "channels_last",
                               "progress_bar", "checkpoint_every", "epochs"})  # fmt: skip


def preset_config(name: str, **overrides) -> TrainConfig:
    """``TrainConfig`` of a preset with ``overrides`` applied (not validated yet). A run length
    (``epochs``) given without any of ``SCHEDULE_FIELDS`` gets the preset's schedule fitted."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
    config = TrainConfig(**{"preset": name, **PRESETS[name], **overrides})
    if "epochs" in overrides and not any(f in overrides for f in SCHEDULE_FIELDS):
        fitted = fit_schedule(TrainConfig(**PRESETS[name]), config.epochs)
        config = dataclasses.replace(config, **fitted)
    return config


def fit_schedule(preset: TrainConfig, epochs: int) -> dict:
    """``{"cycles", "warmup_epochs", "schedule_unit"}`` of ``preset`` fitted to ``epochs``. The
    warmup keeps its share of a cycle (reference: 10 of 50 epochs); the cycles are kept when
    they divide ``epochs`` and each warmup lasts at least an epoch, else the run is one cycle.
    Per epoch, a warmup of W epochs is W constant steps from ``min_lr`` (W = 1: ``min_lr``, then
    the peak), so a warmup under 2 epochs gets a new lr every step."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        return {}  # invalid epochs are left to validate
    share = preset.warmup_epochs * preset.cycles / preset.epochs
    cycles = 1 if epochs % preset.cycles or share * epochs / preset.cycles < 1 else preset.cycles
    warmup = share * epochs / cycles
    return {"cycles": cycles, "warmup_epochs": warmup,
            "schedule_unit": "step" if warmup < 2 else preset.schedule_unit}  # fmt: skip


def auto_preset() -> str:
    """``"reference"`` (RECIPE.md) when a CUDA GPU is available, else ``"cpu-quick"``."""
    return "reference" if torch.cuda.is_available() else "cpu-quick"


def selection_metric(val_split: int) -> str:
    """The metric best.pt is selected on: ``val_acc`` with a validation split, else ``test_acc``."""
    return "val_acc" if val_split else "test_acc"


def config_from_dict(values: dict) -> TrainConfig:
    """Rebuild a ``TrainConfig`` from ``dataclasses.asdict`` / JSON output (lists -> tuples)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown := sorted(set(values) - names):
        raise ValueError(f"unknown training config field(s) {unknown}; valid: {sorted(names)}")
    if isinstance(values.get("betas"), list):
        values = {**values, "betas": tuple(values["betas"])}
    return TrainConfig(**values)


def resume_conflicts(saved: TrainConfig, current: TrainConfig) -> list[str]:
    """Fields that differ between a run's saved config and a resuming one, beyond
    ``RESUME_MAY_CHANGE``, as "name: saved -> current"."""
    return [f"{f.name}: {getattr(saved, f.name)!r} -> {getattr(current, f.name)!r}"
            for f in dataclasses.fields(TrainConfig)
            if f.name not in RESUME_MAY_CHANGE and getattr(saved, f.name) != getattr(current, f.name)]  # fmt: skip


# ---------------------------------------------------------------- validation
def choices(name: str) -> tuple | None:
    """The values a ``Literal`` field of ``TrainConfig`` allows (None for other fields)."""
    hint = typing.get_type_hints(TrainConfig)[name]
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def _type_ok(value, hint) -> bool:
    """Whether ``value`` fits the type hint ``hint`` (unions, Literal, tuples, int vs float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in args)
    if origin is Literal:
        return isinstance(value, str)  # which string: a range check, with the allowed values
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, (int, float))
    if origin is tuple:
        return (isinstance(value, (tuple, list)) and len(value) == len(args)
                and all(_type_ok(v, a) for v, a in zip(value, args, strict=True)))  # fmt: skip
    return isinstance(value, type(None) if hint is type(None) else origin or hint)


def validate(config: TrainConfig, world_size: int = 1) -> None:
    """Raise one ValueError listing every invalid field of ``config`` with what is allowed:
    the types, then each field's range (unless a field it reads is already reported), then the
    model, the device and the data folder."""
    hints = typing.get_type_hints(TrainConfig)
    errors = [f"{f.name}={getattr(config, f.name)!r} has the wrong type: expected {hints[f.name]}"
              for f in dataclasses.fields(config)
              if not _type_ok(getattr(config, f.name), hints[f.name])]  # fmt: skip

    def reported(*names: str) -> bool:
        return any(e.startswith(f"{n}=") for n in names for e in errors)

    for name, ok, allowed, reads in _ranges(config, world_size):
        if not reported(name, *reads) and not ok():
            errors.append(f"{name}={getattr(config, name)!r} is out of range: {allowed}")
    for check, fields in ((_check_model, ("model", "model_overrides", "dataset")),
                          (_check_device, ("device", "precision")), (_check_datapath, ("datapath", "dataset"))):  # fmt: skip
        if not reported(*fields):
            errors += check(config)
    if errors:
        raise ValueError("invalid training config:\n  " + "\n  ".join(errors))


def _ranges(c: TrainConfig, world_size: int) -> list[tuple]:
    """(field, check, allowed values, other fields the check reads) for every ranged field."""
    sizes = DATASETS[c.dataset].sizes if c.dataset in DATASETS else {}
    n_images = c.train_limit if isinstance(c.train_limit, int) else sizes.get("train", TRAIN_SIZE)
    held_out = c.val_split if isinstance(c.val_split, int) and "valid" not in sizes else 0
    n_train, n_val, n_test = n_images - held_out, sizes.get("valid", n_images), sizes.get("test", TEST_SIZE)
    per_epoch = min(n_train, c.epoch_images) if isinstance(c.epoch_images, int) else n_train
    finite = math.isfinite
    return [
        (f.name, lambda n=f.name: getattr(c, n) in choices(n), f"one of {list(choices(f.name))}", ())
        for f in dataclasses.fields(TrainConfig) if choices(f.name)
    ] + [
        ("preset", lambda: c.preset in PRESETS, f"one of {sorted(PRESETS)}", ()),
        ("epochs", lambda: c.epochs >= 1, "an integer >= 1", ()),
        ("time_budget", lambda: 0 <= c.time_budget < math.inf, "minutes >= 0 (0: off)", ()),
        ("train_limit", lambda: c.train_limit is None or 1 <= c.train_limit <= sizes["train"],
         f"1..{sizes.get('train')} or None", ("dataset",)),
        ("test_limit", lambda: c.test_limit is None or 1 <= c.test_limit <= n_test,
         f"1..{n_test} or None", ("dataset",)),
        ("val_split", lambda: 0 <= c.val_split < n_val, f"0..{n_val - 1} (of the {n_val} "
         f"{'valid/' if 'valid' in sizes else 'training'} images)", ("train_limit", "dataset")),
        ("tta", lambda: not c.tta or DATASETS[c.dataset].flips, f"False: a mirrored image is not "
         f"of the same class in {c.dataset}", ("dataset",)),
        ("epoch_images", lambda: c.epoch_images is None or 1 <= c.epoch_images <= n_train,
         f"1..{n_train} (the training images used) or None", ("train_limit", "val_split", "dataset")),
        ("batch_size", lambda: 1 <= c.batch_size <= per_epoch and c.batch_size % world_size == 0,
         f"1..{per_epoch} (the training images of one epoch) and divisible by the {world_size} "
         "process(es)", ("train_limit", "val_split", "epoch_images")),
        ("mix_alpha", lambda: 0 < c.mix_alpha < math.inf, "a finite number > 0", ()),
        ("mix_prob", lambda: 0 <= c.mix_prob <= 1, "[0, 1]", ()),
        ("lr", lambda: 0 < c.lr < math.inf, "a finite number > 0", ()),
        ("min_lr", lambda: 0 <= c.min_lr <= c.lr, f"[0, lr={c.lr}]", ("lr",)),
        ("cycles", lambda: 1 <= c.cycles <= c.epochs, f"1..epochs={c.epochs}", ("epochs",)),
        ("cycles", lambda: c.schedule_unit != "epoch" or c.epochs % c.cycles == 0,
         f"a divisor of epochs={c.epochs} when schedule_unit='epoch'", ("epochs", "schedule_unit")),
        ("warmup_epochs", lambda: 0 <= c.warmup_epochs < c.epochs / c.cycles,
         "[0, epochs / cycles): shorter than one cycle", ("epochs", "cycles")),
        ("betas", lambda: all(0 <= b < 1 for b in c.betas), "two numbers in [0, 1)", ()),
        ("eps", lambda: 0 < c.eps < 1, "(0, 1)", ()),
        ("weight_decay", lambda: finite(c.weight_decay) and c.weight_decay >= 0, "a finite number >= 0", ()),
        ("label_smoothing", lambda: 0 <= c.label_smoothing < 1, "[0, 1)", ()),
        ("grad_clip", lambda: finite(c.grad_clip) and c.grad_clip >= 0, "a finite number >= 0 (0: off)", ()),
        ("ema", lambda: 0 <= c.ema < 1, "[0, 1) (0: off; typical 0.999-0.9999)", ()),
        ("seed", lambda: c.seed >= 0, "an integer >= 0", ()),
        ("checkpoint_every", lambda: c.checkpoint_every >= 0, "an integer >= 0 (0: per epoch)", ()),
        ("out", lambda: len(c.out) > 0, "a non-empty directory path", ()),
    ]  # fmt: skip


def model_options(c: TrainConfig) -> dict:
    """The model's options for ``c.dataset``, under ``c.model_overrides``: its classes, and for
    larger images larger patches, keeping the grid and position tables (docs/datasets.md)."""
    from .model import model_config

    dataset, built = DATASETS[c.dataset], model_config(c.model)
    options = {"num_classes": dataset.num_classes}
    if getattr(built, "image_size", dataset.size) != dataset.size:
        scale = dataset.size // built.image_size
        options.update(image_size=dataset.size, patch_size=built.patch_size * scale)
    return {**options, **c.model_overrides}


def _check_model(c: TrainConfig) -> list[str]:
    from .model import MODELS, model_config

    try:
        model_config(c.model, **model_options(c))
    except (TypeError, ValueError) as e:
        name = "model" if c.model not in MODELS else "model_overrides"
        return [f"{name}={getattr(c, name)!r} is invalid: {e}"]
    return []


def _check_device(c: TrainConfig) -> list[str]:
    try:
        device = resolve_device(c.device)
    except RuntimeError:
        return [f"device={c.device!r} is unknown: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"]
    gpus = torch.cuda.device_count()
    problem = {
        "cuda": "" if (device.index or 0) < gpus else f"is not available: only {gpus} CUDA "
                "device(s)" if gpus else "is not available: no CUDA GPU found (use --device cpu)",
        "mps": "" if torch.backends.mps.is_available() else "is not available: MPS not found "
               "(use --device cpu)",
        "cpu": "",
    }.get(device.type, "is not supported: use 'auto', 'cpu', 'cuda' or 'mps'")  # fmt: skip
    errors = [f"device={c.device!r} {problem}"] if problem else []
    if c.preset in GPU_PRESETS and c.device == "auto" and device.type == "cpu":
        errors.append(f"preset={c.preset!r} is built for a GPU and no GPU was found: use --preset "
                      "cpu-quick on a CPU, or pass --device cpu to run it here anyway "
                      "(--progress_bar on shows the time it would take)")  # fmt: skip
    if resolve_precision(c.precision, device) == "fp16" and device.type != "cuda":
        errors.append(f"precision='fp16' needs a CUDA device, got device={c.device!r} "
                      "(use bf16 or fp32)")  # fmt: skip
    return errors


def _check_datapath(c: TrainConfig) -> list[str]:
    root, dataset = c.datapath or os.environ.get("VITLIB_DATA"), DATASETS[c.dataset]
    if not root:
        return [f"datapath=None and VITLIB_DATA is unset: pass --datapath DIR (the folder "
                f"holding {dataset.folder}/)"]  # fmt: skip
    if not locate(dataset, root).is_dir():
        return [f"datapath={root!r} has no {dataset.folder}/ folder: point it at the folder that "
                f"holds {dataset.layout}"]  # fmt: skip
    return []


# ---------------------------------------------------------------- the command line
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
    about = "Train a model on CIFAR-10 or --dataset. Flags override the preset's values."
    parser = argparse.ArgumentParser(prog="python -m vitlib.train", description=about,
                                     allow_abbrev=False, argument_default=argparse.SUPPRESS)
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        flags += ["--data"] if f.name == "datapath" else []  # the spelling data.py's errors suggest
        values = {name: getattr(preset_config(name), f.name) for name in PRESETS}
        shown = values["reference"] if len(set(map(repr, values.values()))) == 1 else values
        text, hint = f.metadata["help"], hints[f.name]
        text += "" if "default:" in text else f" (default: {shown})"
        kwargs: dict = {"help": text.replace("%", "%%")}
        if f.name == "preset" or choices(f.name):
            kwargs["choices"] = sorted(PRESETS) if f.name == "preset" else choices(f.name)
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
    saved = Path(args.get("out", preset_config(preset).out)) / "config.json"
    if args.get("resume") and saved.is_file():
        return config_from_dict({**json.loads(saved.read_text()), **args})
    return preset_config(preset, **args)
