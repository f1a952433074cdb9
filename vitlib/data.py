"""The five datasets as uint8 tensors (``DATASETS``, docs/datasets.md) and the training loader."""

import hashlib
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import groupby
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .augment import TrainAugment

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_FIX = "Set VITLIB_DATA=DIR or pass DIR (root=DIR, or --datapath DIR on the command line)"
Split = tuple[Tensor, Tensor]  # images uint8 (N, 3, S, S), labels int64 (N,)


@dataclass(frozen=True)
class Dataset:
    """A dataset as vitlib reads it; ``read(dataset, folder, split, limit) -> Split``."""

    name: str
    folder: str  # its folder under the data root
    layout: str  # the official layout, for error messages
    size: int  # images are size x size
    num_classes: int
    sizes: dict[str, int]  # images per split
    read: Callable[..., Split]  # the first ``limit`` images of a split (all: ``limit=None``)
    names: Callable[[Path], tuple[str, ...]]  # folder -> the class names in label order
    flips: bool = True  # a mirror image keeps its class (not a digit's)
    download: str | None = None  # the torchvision class that fetches the official archive


def locate(dataset: Dataset, root: str | os.PathLike | None = None) -> Path:
    """``root`` (default ``$VITLIB_DATA``) / ``dataset.folder``, or ``root`` itself when it has
    no such sub-folder (a path to the dataset's own folder)."""
    root = os.environ.get("VITLIB_DATA") if root is None else root
    if not root:
        raise FileNotFoundError(f"No {dataset.name} location given. {_FIX}, the folder that "
                                f"holds {dataset.layout}.")  # fmt: skip
    root = Path(root).expanduser()
    return root / dataset.folder if (root / dataset.folder).is_dir() else root


def _need(dataset: Dataset, path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{dataset.name}: {path} is missing. Expected the official layout "
                                f"{dataset.layout}; {_FIX}, the folder that holds it.")  # fmt: skip
    return path


def _invalid(file: Path, problem: str) -> ValueError:
    return ValueError(f"{file}: {problem}. Replace it with the file of a fresh copy.")


def _unpickle(file: Path) -> dict:
    try:
        batch = pickle.loads(file.read_bytes(), encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        problem = f"cannot be unpickled ({type(err).__name__}: {err})"
        raise _invalid(file, f"{problem}; the file is truncated or corrupt") from err
    if not isinstance(batch, dict):
        raise _invalid(file, f"expected a dict, found {type(batch).__name__}")
    return batch


def _read_batch(file: Path, key: bytes, num_classes: int) -> Split:
    """A pickled {b"data": uint8 (N, 3072) rows of R, G then B planes, ``key``: N ints in
    0..K-1}, its structure checked -> (images uint8 (N, 3, 32, 32), labels int64 (N,))."""
    batch = _unpickle(file)
    data, labels = batch.get(b"data"), batch.get(key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (3072,):
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _invalid(file, f"b'data' should be a uint8 array (N, 3072), found {found}")
    if not isinstance(labels, list) or len(labels) != len(data):
        found = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise _invalid(file, f"{key} should be a list of {len(data)} labels, found {found}")
    if bad := [i for i, label in enumerate(labels) if not 0 <= label < num_classes]:
        first = f"first: {labels[bad[0]]} at index {bad[0]}"
        raise _invalid(file, f"{len(bad)} labels outside 0..{num_classes - 1} ({first})")
    return torch.from_numpy(data).view(-1, 3, 32, 32), torch.tensor(labels, dtype=torch.int64)


def _read_pickles(files: dict[str, list[str]], key: bytes, dataset: Dataset, folder: Path,
                  split: str, limit: int | None) -> Split:  # fmt: skip
    """CIFAR's python layout: ``files[split]`` in order, as many as ``limit`` needs."""
    parts = []
    for name in files[split]:
        parts.append(_read_batch(_need(dataset, folder / name), key, dataset.num_classes))
        if limit and sum(len(labels) for _, labels in parts) >= limit:
            break
    return tuple(torch.cat(part)[:limit] for part in zip(*parts))


def _read_svhn(dataset: Dataset, folder: Path, split: str, limit: int | None) -> Split:
    """``{split}_32x32.mat``: X uint8 (32, 32, 3, N), y (N, 1) in 1..10 (10: the digit 0)."""
    from scipy.io import loadmat, matlab

    file = _need(dataset, folder / f"{split}_32x32.mat")
    try:
        mat = loadmat(file)
        images, labels = torch.from_numpy(mat["X"]).permute(3, 2, 0, 1), mat["y"].reshape(-1)
    except (ValueError, KeyError, OSError, matlab.MatReadError) as err:
        raise _invalid(file, f"not an SVHN .mat file with X and y ({err})") from err
    if images.shape[1:] != (3, 32, 32) or len(labels) != len(images) or labels.min() < 1 \
            or labels.max() > 10:  # fmt: skip
        raise _invalid(file, "X should be uint8 (32, 32, 3, N) and y N labels in 1..10")
    return images[:limit].contiguous(), torch.from_numpy(labels[:limit] % 10).long()


def _read_images(dataset: Dataset, files: list[str]) -> Tensor:
    """uint8 (N, 3, S, S) of PNG or JPEG files (grey ones made RGB), decoded by PIL."""
    from PIL import Image

    images = torch.empty(len(files), 3, dataset.size, dataset.size, dtype=torch.uint8)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as image:
                images[i] = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
        except (OSError, RuntimeError) as err:
            raise _invalid(Path(file), f"not a {dataset.size}x{dataset.size} image ({err})") from err
    return images


def _read_class_folders(dataset: Dataset, folder: Path, classes: tuple[str, ...],
                        limit: int | None) -> Split:  # fmt: skip
    """``folder/<class>/**/*.png|jpeg`` by ImageFolder's rules: every class's first image, then
    every class's second, ..., so that ``limit`` keeps every class; other folders are an error."""
    from torchvision.datasets.folder import make_dataset

    found = {p.name for p in _need(dataset, folder).iterdir() if p.is_dir()}
    if extra := sorted(found - set(classes)):
        raise ValueError(f"{folder}: {extra[:3]} are not {dataset.name} classes (the layout is "
                         f"{dataset.layout}): remove them, or choose another --dataset")  # fmt: skip
    try:
        samples = make_dataset(str(folder), {c: i for i, c in enumerate(classes)}, (".png", ".jpeg"))
    except FileNotFoundError as err:  # a class without images
        raise FileNotFoundError(f"{err}. Expected the layout {dataset.layout}.") from err
    ranked = sorted((rank, label, file) for _, group in groupby(samples, key=lambda s: s[1])
                    for rank, (file, label) in enumerate(group))  # make_dataset: class by class
    files, labels = zip(*[(file, label) for _, label, file in ranked[:limit]])
    return _read_images(dataset, list(files)), torch.tensor(labels)


def _wnids(folder: Path) -> tuple[str, ...]:
    """Tiny-ImageNet's 200 WordNet ids, sorted: ImageFolder's order of the train folders."""
    file = _need(DATASETS["Tiny-ImageNet"], folder / "wnids.txt")
    if len(wnids := sorted(set(file.read_text().split()))) != 200:
        raise _invalid(file, f"expected 200 WordNet ids, found {len(wnids)}")
    return tuple(wnids)


def _tiny_imagenet_names(folder: Path) -> tuple[str, ...]:
    """The first English name of each class in ``words.txt``, else its WordNet id."""
    lines = (folder / "words.txt").read_text().splitlines() if (folder / "words.txt").is_file() else []
    words = dict(line.split("\t", 1) for line in lines if "\t" in line)
    return tuple(words.get(wnid, wnid).split(",")[0] for wnid in _wnids(folder))


def _read_tiny_imagenet(dataset: Dataset, folder: Path, split: str, limit: int | None) -> Split:
    """train: ``train/<wnid>/images/*.JPEG``; test: the labelled ``val/`` split (the official test
    images have no labels), labels in ``val/val_annotations.txt``."""
    classes = _wnids(folder)
    if split == "train":
        return _read_class_folders(dataset, folder / "train", classes, limit)
    notes = _need(dataset, folder / "val" / "val_annotations.txt")
    rows = [line.split("\t")[:2] for line in notes.read_text().splitlines() if line.strip()]
    if bad := [row for row in rows if len(row) < 2 or row[1] not in classes]:
        raise _invalid(notes, f"{len(bad)} lines without a label of wnids.txt (first: {bad[0]})")
    files = [str(_need(dataset, folder / "val" / "images" / name)) for name, _ in rows[:limit]]
    return _read_images(dataset, files), torch.tensor([classes.index(w) for _, w in rows[:limit]])


CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
DATASETS: dict[str, Dataset] = {d.name: d for d in [
    Dataset("CIFAR-10", "cifar-10-batches-py", "cifar-10-batches-py/{data_batch_1..5,test_batch}",
            32, 10, {"train": 50_000, "test": 10_000}, partial(_read_pickles, CIFAR10_FILES, b"labels"),
            lambda folder: CLASSES, download="CIFAR10"),
    Dataset("CIFAR-100", "cifar-100-python", "cifar-100-python/{train,test,meta}", 32, 100,
            {"train": 50_000, "test": 10_000},
            partial(_read_pickles, {"train": ["train"], "test": ["test"]}, b"fine_labels"),
            lambda folder: tuple(n.decode() for n in _unpickle(folder / "meta")[b"fine_label_names"]),
            download="CIFAR100"),
    Dataset("SVHN", "svhn", "svhn/{train_32x32.mat,test_32x32.mat}", 32, 10,
            {"train": 73_257, "test": 26_032}, _read_svhn, lambda folder: tuple("0123456789"),
            flips=False, download="SVHN"),
    Dataset("CINIC-10", "cinic-10", "cinic-10/{train,valid,test}/<class>/*.png", 32, 10,
            {"train": 90_000, "valid": 90_000, "test": 90_000},
            lambda d, folder, split, limit: _read_class_folders(d, folder / split, CLASSES, limit),
            lambda folder: CLASSES),
    Dataset("Tiny-ImageNet", "tiny-imagenet-200", "tiny-imagenet-200/{wnids.txt,words.txt,"
            "train/<wnid>/images/*.JPEG,val/images/*.JPEG,val/val_annotations.txt}", 64, 200,
            {"train": 100_000, "test": 10_000}, _read_tiny_imagenet, _tiny_imagenet_names),
]}  # fmt: skip


def _download(dataset: Dataset, root: Path, split: str) -> None:
    """Fetch ``split``'s official archive into ``root`` with torchvision (md5-verified), 3 tries."""
    import torchvision.datasets

    if dataset.download is None:
        raise FileNotFoundError(f"{dataset.name} has no downloader in torchvision: fetch it from its "
                                f"authors and unpack it in {root} as {dataset.layout}")  # fmt: skip
    fetch = getattr(torchvision.datasets, dataset.download)
    svhn = dataset.name == "SVHN"  # its root: the folder of the .mat files; it names its splits
    where = root / dataset.folder if svhn else root
    which = {"split": split} if svhn else {"train": split == "train"}
    for attempt in (1, 2, 3):
        try:
            fetch(str(where), download=True, **which)
            return
        except (OSError, RuntimeError) as err:
            if attempt == 3:
                failed = f"Downloading {dataset.name} into {root} failed 3 times ({err})"
                raise RuntimeError(f"{failed}. Check the network, or place {dataset.layout} in "
                                   f"{root} yourself.") from err  # fmt: skip
            time.sleep(2**attempt)


def load_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train",
                 limit: int | None = None, download: bool = False) -> Split:  # fmt: skip
    """``split`` of dataset ``name`` (``DATASETS``): (images uint8 (N, 3, S, S), labels int64 (N,)),
    from its folder in ``root`` (default ``$VITLIB_DATA``), checked for structure, not bytes; only
    the first ``limit``, read no further; ``download=True``: torchvision fetches a missing file."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {list(DATASETS)}")
    dataset = DATASETS[name]
    if split not in dataset.sizes:
        raise ValueError(f"split={split!r}: {name} has the splits {list(dataset.sizes)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit}: expected a positive number of images or None")
    try:
        return dataset.read(dataset, locate(dataset, root), split, limit)
    except FileNotFoundError:
        if not download:
            raise
        folder = locate(dataset, root)
        _download(dataset, folder.parent if folder.name == dataset.folder else folder, split)
    return dataset.read(dataset, locate(dataset, root), split, limit)


def load_cifar10(root: str | os.PathLike | None = None, split: str = "train",
                 limit: int | None = None, download: bool = False) -> Split:  # fmt: skip
    """``load_dataset("CIFAR-10", ...)``: 50,000 training or 10,000 test images (N, 3, 32, 32)."""
    return load_dataset("CIFAR-10", root, split, limit, download)


def class_names(name: str, root: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The class names of dataset ``name`` in label order (some are read from its folder)."""
    return DATASETS[name].names(locate(DATASETS[name], root))


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from e.g. (seed, epoch, batch, rank, purpose), unrelated for nearby inputs."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def shard_indices(n: int, *, shuffle: bool, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1, drop_last: bool = True, limit: int | None = None) -> Tensor:
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
    """Batches (images float32 (B, 3, S, S) in [0, 1], labels int64 (B,)) of uint8 images kept on
    ``device``: ``train`` shuffles, augments there and drops partial batches, else only converts.
    Draws come from (seed, epoch, batch, rank); ``set_epoch(e, b)`` resumes at batch b."""

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, *, train: bool,
                 device: str | torch.device = "cpu", seed: int = 0, rank: int = 0,
                 world_size: int = 1, augment: str = "recipe",
                 epoch_images: int | None = None, flips: bool = True) -> None:  # fmt: skip
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            found = f"{images.dtype} {tuple(images.shape)} and {tuple(labels.shape)}"
            raise ValueError(f"expected uint8 images (N, C, H, W) and N labels, got {found}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected >= 1")
        self.images, self.labels = images.to(device), labels.to(device, torch.int64)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size, self.epoch_images = rank, world_size, epoch_images
        self.augment = TrainAugment(augment if train else "none", flips)  # "none": only to float
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
