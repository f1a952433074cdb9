"""bench/pil_loader.py, the reference run's per-image PIL loader that the data_pipeline
benchmark times: the DeviceLoader's contract, order and determinism, and the recipe's transforms."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from helpers import epoch_batches, labelled_images

from vitlib.data import DeviceLoader

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load_bench_module(name: str):
    """A bench script's module, loaded from its file (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pil_loader = _load_bench_module("pil_loader")
make_cpu_loader, train_transform = pil_loader.make_cpu_loader, pil_loader.train_transform


def test_cpu_loader_contract_and_determinism():
    images, ids = labelled_images(48)
    loader = make_cpu_loader(images, ids, 16, train=True, num_workers=0, seed=3)
    first = epoch_batches(loader, 4)
    assert len(first) == len(loader) == 3
    x, y = first[0]
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() <= 1
    assert sorted(torch.cat([y for _, y in first]).tolist()) == list(range(48))
    workers = epoch_batches(make_cpu_loader(images, ids, 16, train=True, num_workers=2, seed=3), 4)
    for (x1, y1), (x2, y2) in zip(first, workers):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(first[0][1], epoch_batches(loader, 5)[0][1])
    test = list(make_cpu_loader(images, ids, 32, train=False, num_workers=0))
    assert torch.equal(torch.cat([x for x, _ in test]), images.float() / 255)


def test_cpu_and_device_loaders_share_the_epoch_order():
    images, ids = labelled_images(32)
    cpu = epoch_batches(make_cpu_loader(images, ids, 8, train=True, num_workers=0, seed=9), 1)
    dev = epoch_batches(DeviceLoader(images, ids, 8, train=True, seed=9), 1)
    assert [y.tolist() for _, y in cpu] == [y.tolist() for _, y in dev]


def test_without_augmentation_it_shuffles_and_only_converts():
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(40)
    loader = make_cpu_loader(images, labels, 8, num_workers=0, train=True, seed=3, augment="none")
    loader.set_epoch(1)
    batches = list(loader)
    order = torch.cat([y for _, y in batches])
    assert not torch.equal(order, labels) and sorted(order.tolist()) == labels.tolist()
    for x, y in batches:
        assert torch.equal(x, images[y].float() / 255)


def test_transforms_follow_the_policies():
    assert [type(t).__name__ for t in train_transform().transforms] == [
        "TrivialAugmentWide", "RandomHorizontalFlip", "RandomCrop", "ToTensor", "RandomErasing"
    ]  # fmt: skip
    assert [type(t).__name__ for t in train_transform("flip-crop").transforms] == [
        "RandomHorizontalFlip", "RandomCrop", "ToTensor"
    ]  # fmt: skip
    assert type(train_transform("none")).__name__ == "ToTensor"
    with pytest.raises(ValueError, match="unknown augmentation policy 'light'"):
        train_transform("light")
