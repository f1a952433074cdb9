"""Train a RelViT on CIFAR-10: ``train(config)`` and its command line.

    python -m vitlib.train --preset reference --datapath DIR        # RECIPE.md, 200 epochs
    python -m vitlib.train --preset fast                            # modern GPU recipe
    python -m vitlib.train --preset cpu-quick                       # minutes on a CPU
    python -m vitlib.train --out runs/reference --resume            # continue a stopped run
    python -m vitlib.train --out runs/cpu-quick --resume --epochs 20  # extend a finished run
    torchrun --nproc_per_node=4 -m vitlib.train --preset fast       # data parallel

The pieces: ``vitlib.config`` (the settings), ``vitlib.rundir`` (the run directory's lock,
signals and metric files), ``vitlib.loop`` (set-up, one epoch, one step, end of epoch) and
``vitlib.checkpoint`` (the files).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import typing
from pathlib import Path

from . import distributed
from .config import PRESETS, TrainConfig, choices, config_from_dict, preset_config, validate
from .hardware import resolve_device
from .loop import end_epoch, epochs_left, setup, train_epoch
from .rundir import RunLock, StopSignal, TrainingError, never_checkpointed

__all__ = ["TrainingError", "build_parser", "config_from_args", "main", "train"]


def train(config: TrainConfig) -> dict:
    """Train as ``config`` says; returns the last epoch's metrics plus ``history`` (all epochs),
    ``run_dir`` and ``interrupted`` (the signal number that stopped the run, or 0)."""
    run_started = time.perf_counter()  # a --time_budget counts the start-up
    validate(config, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    info = distributed.setup(resolve_device(config.device))
    run_dir = Path(config.out)
    start_over = config.resume and never_checkpointed(run_dir)
    if start_over and info.is_main:
        print(f"{run_dir} has no checkpoint yet: starting the run from the beginning", flush=True)
    try:
        with RunLock(run_dir, config.resume, enabled=info.is_main), StopSignal() as stop:
            state = setup(config, info, run_dir, stop, run_started, start_over)
            for epoch in epochs_left(state):
                started = time.perf_counter()
                if not train_epoch(state, epoch):
                    break
                end_epoch(state, epoch, started, time.perf_counter() - started)
        # Every rank has finished its collectives (rank 0 may still be writing checkpoints)
        # before any tears the process group down; an exception skips this, so it cannot hang.
        distributed.barrier()
    finally:
        distributed.cleanup()
    history = state.progress.history
    return {**(history[-1] if history else {}), "history": history, "run_dir": str(run_dir),
            "interrupted": stop.signum}  # fmt: skip


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
        elif choices(f.name):
            kwargs["choices"] = choices(f.name)
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
    except (ValueError, OSError, MemoryError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 128 + result["interrupted"] if result["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
