"""CIFAR-10 as uint8 tensors and the training loader (the reference run's: bench/pil_loader.py)."""

import hashlib
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .augment import TrainAugment

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FOLDER = "cifar-10-batches-py"
SPLIT_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
IMAGES_PER_FILE = 10_000
_FIX = (
    "Set VITLIB_DATA=DIR or pass DIR (root=DIR, or --datapath DIR on the command line), the folder "
    "that holds cifar-10-batches-py/; or use download=True to fetch the official archive."
)


def resolve_data_root(path: str | os.PathLike | None = None) -> Path:
    """The folder that holds ``cifar-10-batches-py/`` (or the parent of a path to that folder):
    ``path`` if given, else ``$VITLIB_DATA``; FileNotFoundError if neither is set."""
    path = os.environ.get("VITLIB_DATA") if path is None else path
    if not path:
        raise FileNotFoundError(f"No CIFAR-10 location given. {_FIX}")
    root = Path(path).expanduser()
    return root.parent if root.name == FOLDER else root


def local_data_root() -> Path | None:
    """The data root ``$VITLIB_DATA`` names if it holds ``cifar-10-batches-py/``, else None."""
    root = resolve_data_root() if os.environ.get("VITLIB_DATA") else None
    return root if root and (root / FOLDER).is_dir() else None


def _invalid(file: Path, problem: str) -> ValueError:
    fix = f"replace {file.parent} with a fresh copy (e.g. delete it and use download=True)"
    return ValueError(f"{file}: {problem}. This is not a valid CIFAR-10 python batch; {fix}.")


def _read_batch(file: Path) -> tuple[Tensor, Tensor]:
    """A pickled {b"data": uint8 (10000, 3072) rows of R, G then B planes, b"labels": 10000 ints
    in 0..9}, its structure checked -> (images uint8 (10000, 3, 32, 32), labels int64 (10000,))."""
    if not file.is_file():
        raise FileNotFoundError(f"CIFAR-10 file missing: {file}. {_FIX}")
    try:
        batch = pickle.loads(file.read_bytes(), encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        problem = f"cannot be unpickled ({type(err).__name__}: {err})"
        raise _invalid(file, f"{problem}; the file is truncated or corrupt") from err
    if not isinstance(batch, dict):
        raise _invalid(file, f"expected a dict, found {type(batch).__name__}")
    data, labels = batch.get(b"data"), batch.get(b"labels")
    array = isinstance(data, np.ndarray)
    if not array or data.dtype != np.uint8 or data.shape != (IMAGES_PER_FILE, 3072):
        found = f"{data.dtype} {data.shape}" if array else type(data).__name__
        raise _invalid(file, f"b'data' should be a uint8 array (10000, 3072), found {found}")
    if not isinstance(labels, list) or len(labels) != len(data):
        found = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise _invalid(file, f"b'labels' should be a list of {len(data)} labels, found {found}")
    if bad := [i for i, label in enumerate(labels) if not 0 <= label < len(CLASSES)]:
        first = f"first: {labels[bad[0]]} at index {bad[0]}"
        raise _invalid(file, f"{len(bad)} labels outside 0..9 ({first})")
    return torch.from_numpy(data).view(-1, 3, 32, 32), torch.tensor(labels, dtype=torch.int64)


def _download(root: Path, train: bool) -> None:
    """Fetch the official archive into ``root`` with torchvision (md5-verified), in three tries."""
    from torchvision.datasets import CIFAR10

    for attempt in (1, 2, 3):
        try:
            CIFAR10(str(root), train=train, download=True)
            return
        except (OSError, RuntimeError) as err:
            if attempt == 3:
                failed = f"Downloading CIFAR-10 into {root} failed 3 times ({err})"
                fix = f"Check the network, or place cifar-10-batches-py/ in {root} yourself."
                raise RuntimeError(f"{failed}. {fix}") from err
            time.sleep(2**attempt)


def load_cifar10(root: str | os.PathLike | None = None, split: str = "train",
                 limit: int | None = None,
                 download: bool = False) -> tuple[Tensor, Tensor]:  # fmt: skip
    """CIFAR-10 ``split`` ("train": 50,000 images, "test": 10,000) in the canonical order: (images
    uint8 (N, 3, 32, 32), labels int64 (N,)). ``root`` (default ``$VITLIB_DATA``) holds
    ``cifar-10-batches-py/``, checked for structure, not bytes; ``limit`` keeps the first N images
    (reading only the files needed); ``download=True`` fetches the archive if a file is missing."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split={split!r}: expected 'train' or 'test'")
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit}: expected a positive number of images or None")
    folder = resolve_data_root(root) / FOLDER
    files = SPLIT_FILES[split][: None if limit is None else -(-limit // IMAGES_PER_FILE)]
    if download and not all((folder / name).is_file() for name in files):
        _download(folder.parent, train=split == "train")
    if not folder.is_dir():
        raise FileNotFoundError(f"CIFAR-10 not found: {folder} does not exist. {_FIX}")
    images, labels = zip(*(_read_batch(folder / name) for name in files))
    return torch.cat(images)[:limit], torch.cat(labels)[:limit]


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from e.g. (seed, epoch, batch, rank, purpose), unrelated for nearby inputs."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def shard_indices(n: int, *, shuffle: bool, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1, drop_last: bool = True,
                  limit: int | None = None) -> Tensor:  # fmt: skip
    """This rank's sample indices (CPU int64) for one epoch: entries r, r + world_size, ... of an
    order drawn from (seed, epoch) alone (``DistributedSampler``'s rule), cut to its first ``limit``
    (with ``shuffle``: a fresh subset each epoch) and with ``drop_last`` to equal shares."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in 0..world_size-1 (world_size={world_size})")
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch, "order"))
    order = (torch.randperm(n, generator=generator) if shuffle else torch.arange(n))[:limit]
    if drop_last:
        order = order[: len(order) - len(order) % world_size]
    return order[rank::world_size]


class DeviceLoader:
    """Batches (images float32 (B, 3, 32, 32) in [0, 1], labels int64 (B,)) of uint8 images kept on
    ``device``: ``train`` shuffles, augments there and drops partial batches, else only converts.
    Draws come from (seed, epoch, batch, rank); ``set_epoch(e, b)`` resumes at batch b."""

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, *, train: bool,
                 device: str | torch.device = "cpu", seed: int = 0, rank: int = 0,
                 world_size: int = 1, augment: str = "recipe",
                 epoch_images: int | None = None) -> None:  # fmt: skip
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            found = f"{images.dtype} {tuple(images.shape)} and {tuple(labels.shape)}"
            raise ValueError(f"expected uint8 images (N, C, H, W) and N labels, got {found}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected >= 1")
        self.images, self.labels = images.to(device), labels.to(device, torch.int64)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size, self.epoch_images = rank, world_size, epoch_images
        self.augment = TrainAugment(policy=augment if train else "none")  # "none": only to float
        self.epoch = self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (and its first batch) that the next iteration yields."""
        self.epoch, self.start_batch = epoch, start_batch

    def _indices(self) -> Tensor:
        return shard_indices(len(self.labels), shuffle=self.train, seed=self.seed, epoch=self.epoch,
                             rank=self.rank, world_size=self.world_size, drop_last=self.train,
                             limit=self.epoch_images)  # fmt: skip

    def __len__(self) -> int:
        n = len(self._indices())
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self._indices().to(self.images.device)
        for b in range(self.start_batch, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            seed = derive_seed(self.seed, self.epoch, b, self.rank, "augment")
            x = self.augment(self.images[idx], torch.Generator().manual_seed(seed))
            yield x, self.labels[idx]
