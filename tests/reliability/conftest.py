"""Shared pieces of the reliability tests: a tiny training config and a weight comparison."""

from __future__ import annotations

import pytest
import torch

from vitlib.config import preset_config

# 109k parameters (most in the strided stem); 96 images in batches of 16: 6 steps per epoch.
TINY_FLAGS = {
    "preset": "cpu-quick",
    "train_limit": "96",
    "test_limit": "32",
    "epochs": "3",
    "batch_size": "16",
    "warmup_epochs": "0.5",
    "augment": "recipe",
    "mix": "cutmix",
    "progress": "off",
}
TINY_MODEL = {"depth": 1, "dim": 32, "head_channels": 16}


def tiny_argv(out, datapath, *extra: str) -> list[str]:
    """Command line of the tiny run (augmentation and CutMix on, so RNG restore matters)."""
    argv = [f"--{k}={v}" for k, v in TINY_FLAGS.items()]
    argv += ["--model_overrides", *(f"{k}={v}" for k, v in TINY_MODEL.items())]
    return argv + ["--no-compile", "--out", str(out), "--datapath", str(datapath), *extra]


@pytest.fixture
def tiny(cifar_root):
    """``tiny(out, **overrides)`` -> the TrainConfig of the tiny run (same as ``tiny_argv``)."""

    def make(out, **overrides):
        return preset_config(
            "cpu-quick",
            **{
                "train_limit": 96,
                "test_limit": 32,
                "epochs": 3,
                "batch_size": 16,
                "compile": False,
                "warmup_epochs": 0.5,
                "mix": "cutmix",
                "progress": "off",
                "augment": "recipe",
                "model_overrides": TINY_MODEL,
                "datapath": str(cifar_root),
                "out": str(out),
                **overrides,
            },
        )

    return make


def assert_same_tensors(a: dict, b: dict) -> None:
    """Two state dicts hold the same keys and bitwise-equal tensors."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
