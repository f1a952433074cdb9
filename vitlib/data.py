"""CIFAR-10 as uint8 tensors, and the two loaders that feed training.

``load_cifar10`` reads the official python layout (``cifar-10-batches-py/``) itself and checks
its structure, so a rebuilt copy that is not byte-identical to the official archive is accepted.
``DeviceLoader`` keeps the whole uint8 set on the device and augments batches there
(``vitlib.augment.TrainAugment``); ``make_cpu_loader`` is the per-image PIL/torchvision path
of the reference run, for teaching and CPU runs. Both yield
``(images float32 (B, 3, 32, 32) in [0, 1], labels int64 (B,))`` and derive all randomness
from (seed, epoch, rank), so an epoch replays identically after a resume.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vitlib.augment import POLICIES, TrainAugment

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


def _mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps), so nearby (seed, epoch, rank) differ fully."""
    state = 0x9E3779B97F4A7C15
    for v in values:
        state = (state ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return state >> 1


def shard_indices(
    n: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
) -> Tensor:
    """This rank's sample indices (CPU int64) for one epoch.

    The order is a permutation drawn from (seed, epoch) only, identical on every rank; rank r
    takes every world_size-th entry from r. With ``drop_last`` the order is first cut to a
    multiple of world_size, so shares are disjoint and equal; otherwise they are disjoint, cover
    all n, and differ in size by at most one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in 0..world_size-1 (world_size={world_size})")
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(_mix_seed(seed, epoch)))
    else:
        order = torch.arange(n)
    if drop_last:
        order = order[: n - n % world_size]
    return order[rank::world_size]


class DeviceLoader:
    """Batches from a dataset held entirely on ``device`` as uint8.

    Yields (images float32 (B, 3, 32, 32) in [0, 1], labels int64 (B,)) on ``device``. With
    ``train=True`` the order is shuffled and the RECIPE.md augmentation (``TrainAugment``) runs
    batched on the device; otherwise images are only converted to float. Shuffle and augmentation
    are drawn from CPU generators seeded by (seed, epoch) and (seed, epoch, rank): call
    ``set_epoch(epoch)`` before each epoch. ``rank``/``world_size`` shard the order for DDP.
    ``augment`` names the policy (``vitlib.augment.POLICIES``: ``"recipe"``, ``"flip-crop"``,
    ``"none"``); ``"none"`` keeps the training shuffle but only converts to float.
    ``drop_last`` (default: ``train``) drops the last partial batch and the remainder that does
    not split evenly over ranks."""

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
        self.epoch = 0
        self.augment = TrainAugment(policy=augment)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle and augmentation the next iteration replays."""
        self.epoch = epoch

    def _indices(self) -> Tensor:
        return shard_indices(
            len(self.labels),
            shuffle=self.train,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            drop_last=self.drop_last,
        )

    def __len__(self) -> int:
        n = len(self._indices())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self._indices().to(self.device)
        generator = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, self.rank, 1))
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[idx]
            x = self.augment(x, generator) if self.train else x.float().div_(255)
            yield x, self.labels[idx]


# ---------------------------------------------------------------- the per-image PIL path


def train_transform(policy: str = "recipe"):
    """The reference run's per-image train transform (torchvision, PIL in, float tensor out);
    ``policy="flip-crop"`` keeps only the flip and the crop, ``"none"`` only the conversion to
    float (as ``TrainAugment``)."""
    from torchvision import transforms as T

    if policy not in POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}: choose one of {POLICIES}")
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
            torch.manual_seed(_mix_seed(self.seed, self.epoch, indices[0]))
            return [self[i] for i in indices]


class CPULoader:
    """A torch DataLoader (with workers) over ``PILDataset``; the same interface and yield
    contract as ``DeviceLoader`` (set_epoch, len, (float (B, 3, 32, 32), int64 (B,)) batches),
    and the same (seed, epoch, rank) shuffle and sharding."""

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


# ---------------------------------------------------------------- display


def sample_grid(
    images: Tensor,
    labels: Sequence[int] | Tensor,
    *,
    ncols: int = 8,
    predictions: Sequence[int] | Tensor | None = None,
    classes: Sequence[str] = CLASSES,
    scale: float = 1.2,
):
    """A matplotlib Figure showing images with their class names (and predictions, if given:
    green when right, red when wrong). images uint8 or float in [0, 1], (N, 3, H, W)."""
    from matplotlib.figure import Figure

    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(
            f"expected images (N, C, H, W) and N labels, got {tuple(images.shape)} and {len(labels)}"
        )
    pixels = images.detach().cpu()
    pixels = pixels.float() / 255 if pixels.dtype == torch.uint8 else pixels.float().clamp(0, 1)
    n = len(pixels)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(scale * ncols, scale * nrows + 0.3 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= n:
            continue
        ax.imshow(pixels[k].permute(1, 2, 0).numpy(), interpolation="nearest")
        title = classes[int(labels[k])]
        if predictions is not None:
            guess = int(predictions[k])
            title = f"{classes[guess]}\n({title})"
            ax.set_title(title, fontsize=7, color="green" if guess == int(labels[k]) else "red")
        else:
            ax.set_title(title, fontsize=7)
    fig.tight_layout()
    return fig
