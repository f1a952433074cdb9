"""The reference run's per-image data path, kept for benchmarks: PIL images through torchvision
transforms in a torch DataLoader. ``bench/data_pipeline.py`` times it against the batched
``vitlib.data.DeviceLoader`` that training uses.

``make_cpu_loader`` yields what ``DeviceLoader`` yields, ``(images float32 (B, 3, 32, 32) in
[0, 1], labels int64 (B,))``, in the same (seed, epoch, rank) order
(``vitlib.data.shard_indices``), and derives its augmentation from (seed, epoch, batch), so an
epoch replays identically whatever the number of workers.

Bench scripts import it as a sibling (``from pil_loader import make_cpu_loader``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from vitlib.augment import check_policy
from vitlib.data import derive_seed, shard_indices


def train_transform(policy: str = "recipe"):
    """The reference run's per-image train transform (torchvision, PIL in, float tensor out);
    ``policy="flip-crop"`` keeps only the flip and the crop, ``"none"`` only the conversion to
    float (as ``vitlib.augment.TrainAugment``)."""
    from torchvision import transforms as T

    check_policy(policy)
    if policy == "none":
        return T.ToTensor()
    if policy == "flip-crop":
        return T.Compose([T.RandomHorizontalFlip(), T.RandomCrop(32, padding=4), T.ToTensor()])
    return T.Compose(
        [
            T.TrivialAugmentWide(),
            T.RandomHorizontalFlip(),
            T.RandomCrop(32, padding=4),
            T.ToTensor(),
            T.RandomErasing(p=0.1),
        ]
    )


class PILDataset(torch.utils.data.Dataset):
    """uint8 tensors served as PIL images through a torchvision transform, one image at a time.

    A batch fetched by a DataLoader (``__getitems__``) is transformed under a torch RNG seeded by
    (seed, epoch, its first index), so results do not depend on the number of workers or on
    which worker handles the batch. Items are (float (3, 32, 32), int)."""

    def __init__(self, images: Tensor, labels: Tensor, transform, seed: int = 0) -> None:
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, 32, 32, 3) for PIL
        self.labels = labels.tolist()
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, int]]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, self.epoch, indices[0], "pil"))
            return [self[i] for i in indices]


class CPULoader:
    """A torch DataLoader (with workers) over ``PILDataset``; the same interface and yield
    contract as ``vitlib.data.DeviceLoader`` (set_epoch, len, (float (B, 3, 32, 32), int64 (B,))
    batches), and the same (seed, epoch, rank) shuffle and sharding."""

    def __init__(
        self,
        dataset: PILDataset,
        batch_size: int,
        *,
        shuffle: bool,
        num_workers: int,
        rank: int,
        world_size: int,
        drop_last: bool,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle, self.num_workers = shuffle, num_workers
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle and augmentation the next iteration replays."""
        self.dataset.epoch = epoch

    def _batches(self) -> list[list[int]]:
        order = shard_indices(
            len(self.dataset),
            shuffle=self.shuffle,
            seed=self.dataset.seed,
            epoch=self.dataset.epoch,
            rank=self.rank,
            world_size=self.world_size,
            drop_last=self.drop_last,
        ).tolist()
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return [b for b in batches if len(b) == self.batch_size or not self.drop_last]

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=self._batches(), num_workers=self.num_workers
        )
        yield from loader


def make_cpu_loader(
    images: Tensor,
    labels: Tensor,
    batch_size: int,
    *,
    train: bool,
    num_workers: int = 2,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool | None = None,
    augment: str = "recipe",
) -> CPULoader:
    """The per-image PIL/torchvision loader of the reference run (train: shuffled, with
    ``train_transform(augment)``; test: only to float). images uint8
    (N, 3, 32, 32), labels (N,). Deterministic per (seed, epoch) whatever ``num_workers``; call
    ``set_epoch`` before each epoch."""
    from torchvision import transforms as T

    transform = train_transform(augment) if train else T.ToTensor()
    return CPULoader(
        PILDataset(images, labels, transform, seed),
        batch_size,
        shuffle=train,
        num_workers=num_workers,
        rank=rank,
        world_size=world_size,
        drop_last=train if drop_last is None else drop_last,
    )
