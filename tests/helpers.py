"""Plain helpers the tests share (``from helpers import ...``): fixtures live in conftest.py."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import torch


def local_data_root() -> Path | None:
    """``$VITLIB_DATA`` if it holds ``cifar-10-batches-py/`` (the real CIFAR-10), else None."""
    root = os.environ.get("VITLIB_DATA")
    return Path(root) if root and (Path(root) / "cifar-10-batches-py").is_dir() else None


def labelled_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n random uint8 images whose 'label' is their index, to track samples through a loader."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n)


def epoch_batches(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """All batches of ``epoch`` from a loader with ``set_epoch``."""
    loader.set_epoch(epoch)
    return list(loader)


def assert_shuffles_and_only_converts(loader, images: torch.Tensor, labels: torch.Tensor) -> None:
    """A training loader without augmentation: a shuffled order of all images, each batch the
    images themselves as float in [0, 1]."""
    batches = epoch_batches(loader, 1)
    order = torch.cat([y for _, y in batches])
    assert not torch.equal(order, labels) and sorted(order.tolist()) == labels.tolist()
    for x, y in batches:
        assert torch.equal(x, images[y].float() / 255)


# The tiny run every training test uses: a 109k-parameter vit_cifar10_small (most of it in the
# strided stem), 96 images in batches of 16 (6 steps per epoch), 3 epochs, full augmentation and
# CutMix (so resuming must restore every random draw), no compilation.
TINY_MODEL = {"depth": 1, "dim": 32, "head_channels": 16}
TINY = {
    "train_limit": 96,
    "test_limit": 32,
    "epochs": 3,
    "batch_size": 16,
    "warmup_epochs": 0.5,
    "augment": "recipe",
    "mix": "cutmix",
    "progress_bar": "off",
    "compile": False,
    "model_overrides": TINY_MODEL,
}


def tiny_argv(out, datapath, *extra: str) -> list[str]:
    """The command line of the tiny run (``tiny_config``'s settings) into ``out``."""
    argv = ["--preset", "cpu-quick", "--no-compile", "--out", str(out), "--datapath", str(datapath)]
    argv += [f"--{k}={v}" for k, v in TINY.items() if k not in ("compile", "model_overrides")]
    return argv + ["--model_overrides", *(f"{k}={v}" for k, v in TINY_MODEL.items()), *extra]


def assert_same_tensors(a: dict, b: dict) -> None:
    """Two state dicts hold the same keys and bitwise-equal tensors."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class StepClock:
    """A fake clock for ``train(config, clock=c, on_batch=c.count_step)``: it reads
    ``seconds_per_step`` per step begun (plus a microsecond per reading, so that no interval is
    zero), and ``ahead`` seconds more, so that a run's length is the same on any machine."""

    def __init__(self, seconds_per_step: float = 10.0, ahead: float = 0.0) -> None:
        self.seconds_per_step, self.ahead = seconds_per_step, ahead
        self.steps = self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.ahead + self.seconds_per_step * self.steps + 1e-6 * self.reads

    def count_step(self, run, images, labels) -> None:
        self.steps += 1


BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench_module(name: str):
    """A bench script's module, loaded from its file (bench/ is not a package; its scripts import
    their siblings, such as ``common``, by name, so bench/ is on sys.path while it loads)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module
