"""CIFAR-10 as uint8 tensors, and the loader that feeds training.

``load_cifar10`` reads the official python layout (``cifar-10-batches-py/``) itself and checks
its structure, so a rebuilt copy that is not byte-identical to the official archive is accepted.
``DeviceLoader`` keeps the whole uint8 set on the device and augments batches there
(``vitlib.augment.TrainAugment``). It yields
``(images float32 (B, 3, 32, 32) in [0, 1], labels int64 (B,))`` and derives its randomness
from (seed, epoch) for the order and (seed, epoch, batch, rank) for the augmentation, so a
resumed run starts at any batch without replaying the ones before. (The reference run's
per-image PIL/torchvision loader lives in ``bench/pil_loader.py``, for benchmarks.)
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vitlib.augment import TrainAugment

CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

FOLDER = "cifar-10-batches-py"
SPLIT_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
IMAGES_PER_FILE = 10_000
_FIX = (
    "Set VITLIB_DATA=DIR or pass the data root explicitly (root=DIR, or --datapath DIR on the "
    "command line), where DIR is the folder that holds cifar-10-batches-py/; "
    "or use download=True to fetch the official archive with torchvision."
)


def resolve_data_root(path: str | os.PathLike | None = None) -> Path:
    """The folder that holds ``cifar-10-batches-py/``: ``path`` if given, else ``$VITLIB_DATA``.

    A path to ``cifar-10-batches-py`` itself is accepted and mapped to its parent.
    Raises FileNotFoundError when neither is set."""
    if path is None:
        path = os.environ.get("VITLIB_DATA") or None
    if path is None:
        raise FileNotFoundError(f"No CIFAR-10 location given. {_FIX}")
    root = Path(path).expanduser()
    return root.parent if root.name == FOLDER else root


def local_data_root(path: str | os.PathLike | None = None) -> Path | None:
    """``resolve_data_root(path)`` if a ``cifar-10-batches-py/`` folder is there, else None."""
    try:
        root = resolve_data_root(path)
    except FileNotFoundError:
        return None
    return root if (root / FOLDER).is_dir() else None


def _invalid(file: Path, problem: str) -> ValueError:
    return ValueError(
        f"{file}: {problem}. This is not a valid CIFAR-10 python batch; replace {file.parent} "
        "with a fresh copy (e.g. delete it and use download=True)."
    )


def _read_batch(file: Path) -> tuple[Tensor, Tensor]:
    """One pickled batch -> (images uint8 (10000, 3, 32, 32), labels int64 (10000,))."""
    if not file.is_file():
        raise FileNotFoundError(f"CIFAR-10 file missing: {file}. {_FIX}")
    try:
        with open(file, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        problem = (
            f"cannot be unpickled ({type(err).__name__}: {err}); the file is truncated or corrupt"
        )
        raise _invalid(file, problem) from err
    if not isinstance(batch, dict):
        raise _invalid(file, f"expected a dict, found {type(batch).__name__}")
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray):
        raise _invalid(file, f"b'data' should be a numpy array, found {type(data).__name__}")
    if data.dtype != np.uint8:
        raise _invalid(file, f"b'data' has dtype {data.dtype}, expected uint8")
    if data.shape != (IMAGES_PER_FILE, 3 * 32 * 32):
        raise _invalid(
            file, f"b'data' has shape {data.shape}, expected {(IMAGES_PER_FILE, 3 * 32 * 32)}"
        )
    if not isinstance(labels, list) or len(labels) != len(data):
        count = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise _invalid(file, f"b'labels' should be a list of {len(data)} labels, found {count}")
    labels = torch.tensor(labels, dtype=torch.int64)
    bad = ((labels < 0) | (labels >= len(CLASSES))).nonzero().flatten()
    if len(bad):
        first = bad[0].item()
        raise _invalid(
            file, f"{len(bad)} labels outside 0..9 (first: {labels[first].item()} at index {first})"
        )
    return torch.from_numpy(data).view(-1, 3, 32, 32), labels


def _download(root: Path, train: bool, attempts: int = 3) -> None:
    """Fetch and extract the official archive into ``root`` with torchvision (md5-verified)."""
    from torchvision.datasets import CIFAR10

    for attempt in range(1, attempts + 1):
        try:
            CIFAR10(str(root), train=train, download=True)
            return
        except (OSError, RuntimeError) as err:
            if attempt == attempts:
                raise RuntimeError(
                    f"Downloading CIFAR-10 into {root} failed {attempts} times ({err}). Check the "
                    f"network, or place cifar-10-batches-py/ in {root} yourself."
                ) from err
            time.sleep(2**attempt)


def load_cifar10(
    root: str | os.PathLike | None = None,
    split: str = "train",
    limit: int | None = None,
    download: bool = False,
) -> tuple[Tensor, Tensor]:
    """CIFAR-10 ``split`` ("train": 50,000 images, "test": 10,000) in the canonical order.

    ``root`` is the folder holding ``cifar-10-batches-py/`` (default ``$VITLIB_DATA``);
    ``limit`` keeps the first N images (and reads only the files needed);
    ``download=True`` fetches the official archive with torchvision when files are missing.
    Returns (images uint8 (N, 3, 32, 32), labels int64 (N,))."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split={split!r}: expected 'train' or 'test'")
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit}: expected a positive number of images or None")
    base = resolve_data_root(root)
    folder = base / FOLDER
    files = SPLIT_FILES[split]
    if limit is not None:
        files = files[: -(-limit // IMAGES_PER_FILE)]
    if download and not all((folder / name).is_file() for name in files):
        _download(base, train=split == "train")
    if not folder.is_dir():
        raise FileNotFoundError(f"CIFAR-10 not found: {folder} does not exist. {_FIX}")
    images, labels = zip(*(_read_batch(folder / name) for name in files))
    return torch.cat(images)[:limit], torch.cat(labels)[:limit]


# ---------------------------------------------------------------- shuffling and sharding


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from e.g. (seed, epoch, batch, rank, purpose): nearby inputs give unrelated
    seeds, so every random draw of a run can be seeded from where it happens (stateless)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def shard_indices(
    n: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
    limit: int | None = None,
) -> Tensor:
    """This rank's sample indices (CPU int64) for one epoch.

    The order is a permutation drawn from (seed, epoch) only, identical on every rank; rank r
    takes every world_size-th entry from r (``DistributedSampler``'s rule). Global batch b, the
    entries b*B..(b+1)*B-1 of the order, is then split over the ranks whatever their number.
    With ``drop_last`` the order is first cut to a multiple of world_size, so shares are disjoint
    and equal; otherwise they are disjoint, cover all n, and differ in size by at most one.
    ``limit`` keeps the first ``limit`` entries of the order: with ``shuffle``, a fresh random
    subset of the n samples each epoch."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in 0..world_size-1 (world_size={world_size})")
    if shuffle:
        generator = torch.Generator().manual_seed(derive_seed(seed, epoch, "order"))
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.arange(n)
    order = order[:limit]
    if drop_last:
        order = order[: len(order) - len(order) % world_size]
    return order[rank::world_size]


class DeviceLoader:
    """Batches from a dataset held entirely on ``device`` as uint8.

    Yields (images float32 (B, 3, 32, 32) in [0, 1], labels int64 (B,)) on ``device``. With
    ``train=True`` the order is shuffled and the RECIPE.md augmentation (``TrainAugment``) runs
    batched on the device; otherwise images are only converted to float. Shuffle and augmentation
    are drawn from CPU generators seeded by (seed, epoch) and (seed, epoch, batch, rank): call
    ``set_epoch(epoch)`` before each epoch (``set_epoch(epoch, start_batch=b)`` starts at batch b
    with exactly the batches an iteration from 0 yields there). ``rank``/``world_size`` shard the
    order for DDP.
    ``augment`` names the policy (``vitlib.augment.POLICIES``: ``"recipe"``, ``"flip-crop"``,
    ``"none"``); ``"none"`` keeps the training shuffle but only converts to float.
    ``drop_last`` (default: ``train``) drops the last partial batch and the remainder that does
    not split evenly over ranks. ``epoch_images`` makes each epoch a fresh random subset of that
    many images (default: all)."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        train: bool,
        device: str | torch.device = "cpu",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool | None = None,
        augment: str = "recipe",
        epoch_images: int | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(
                f"expected uint8 images (N, C, H, W) and N labels, got {images.dtype} "
                f"{tuple(images.shape)} and {tuple(labels.shape)} (use load_cifar10)"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected >= 1")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.train = train
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.drop_last = train if drop_last is None else drop_last
        self.epoch = self.start_batch = 0
        self.epoch_images = epoch_images
        self.augment = TrainAugment(policy=augment)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (and its first batch) that the next iteration yields."""
        self.epoch, self.start_batch = epoch, start_batch

    def _indices(self) -> Tensor:
        return shard_indices(
            len(self.labels),
            shuffle=self.train,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            drop_last=self.drop_last,
            limit=self.epoch_images,
        )

    def __len__(self) -> int:
        n = len(self._indices())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self._indices().to(self.device)
        for b in range(self.start_batch, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[idx]
            if self.train:
                seed = derive_seed(self.seed, self.epoch, b, self.rank, "augment")
                x = self.augment(x, torch.Generator().manual_seed(seed))
            else:
                x = x.float().div_(255)
            yield x, self.labels[idx]
