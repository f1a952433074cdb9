"""Helpers the loader tests share (imported as ``from helpers import ...``)."""

from __future__ import annotations

import torch


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
