"""Shared fixtures. CIFAR-10 is found through ``VITLIB_DATA`` (the folder that holds
``cifar-10-batches-py/``). Without it, ``cifar_root`` writes a synthetic CIFAR-10 in the official
layout, so a fresh clone's ``python -m pytest`` still trains, evaluates and runs the notebooks;
the few tests that need the real images (``real_cifar_root``) skip and say so."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, local_data_root

from vitlib.config import TrainConfig, preset_config
from vitlib.data import CLASSES

SYNTHETIC_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
# One clearly different colour per class (red, green, yellow, blue, orange, purple, cyan,
# magenta, lime, pink).
SYNTHETIC_COLOURS = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]],
    dtype=np.uint8,
)  # fmt: skip


def write_synthetic_cifar10(root: Path, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/`` in the official python layout (pickled dicts with b"data"
    uint8 (10000, 3072) and b"labels", plus batches.meta): 60,000 images of noise, each with a
    12x12 square in its class's colour at a random place, so a model can learn the classes.
    Returns ``root``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = np.arange(32)
    for name in SYNTHETIC_FILES:
        labels = rng.integers(0, len(CLASSES), size=10_000)
        images = rng.integers(0, 128, size=(10_000, 3, 32, 32), dtype=np.uint8)
        top, left = rng.integers(0, 21, size=(2, 10_000, 1))
        rows = (pixels >= top) & (pixels < top + 12)  # (10000, 32)
        cols = (pixels >= left) & (pixels < left + 12)
        square = (rows[:, :, None] & cols[:, None, :])[:, None]  # (10000, 1, 32, 32)
        images = np.where(square, SYNTHETIC_COLOURS[labels][:, :, None, None], images)
        batch = {b"batch_label": name.encode(), b"labels": labels.tolist(),
                 b"data": images.reshape(10_000, -1), b"filenames": []}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": 10_000}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return root


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """The directory holding ``cifar-10-batches-py/``: the real data when ``VITLIB_DATA`` names
    it, else a synthetic stand-in (written once per test session)."""
    return local_data_root() or write_synthetic_cifar10(
        tmp_path_factory.mktemp("synthetic-cifar10")
    )


@pytest.fixture(scope="session")
def real_cifar_root() -> Path:
    """The real CIFAR-10, or a skip naming what to set: for tests of accuracy on real images."""
    root = local_data_root()
    if root is None:
        pytest.skip(
            "needs the real CIFAR-10: set VITLIB_DATA to the folder holding cifar-10-batches-py/"
        )
    return root


@pytest.fixture(scope="session")
def tiny_config(cifar_root):
    """``tiny_config(out, **overrides)``: the TrainConfig of the tiny run (tests/helpers.TINY, the
    cpu-quick preset otherwise) into ``out``, on ``cifar_root``."""

    def make(out, **overrides) -> TrainConfig:
        settings = {**TINY, "datapath": str(cifar_root), "out": str(out), **overrides}
        return preset_config("cpu-quick", **settings)

    return make


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
