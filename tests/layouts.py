"""Small synthetic copies of the datasets in their official on-disk layouts (none of them can be
fetched here). Every image is noise with a square in its class's colour at a random place, so a
model learns the classes in a few steps. Only the first ``LEARNED`` classes carry images in
number; the 100- and 200-class layouts hold the rest of the classes as the layout demands (every
Tiny-ImageNet folder needs an image; CIFAR-100's labels may simply be absent)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

LEARNED = 10  # classes with images enough to learn
# One clearly different colour per learned class (red, green, yellow, blue, orange, purple, cyan,
# magenta, lime, pink); other classes get grey levels.
COLOURS = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]],
    dtype=np.uint8,
)  # fmt: skip


def squares(labels: np.ndarray, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 (N, 3, size, size): noise in 0..127 with a ``size * 3 // 8`` square in the colour of
    each label (grey for labels >= ``LEARNED``) at a random place."""
    rng = np.random.default_rng(seed)
    n, side = len(labels), size * 3 // 8
    images = rng.integers(0, 128, size=(n, 3, size, size), dtype=np.uint8)
    top, left = rng.integers(0, size - side + 1, size=(2, n, 1))
    pixels = np.arange(size)
    rows, cols = (pixels >= top) & (pixels < top + side), (pixels >= left) & (pixels < left + side)
    colours = np.where(labels[:, None] < LEARNED, COLOURS[labels % LEARNED], 128 + labels[:, None] % 100)
    return np.where((rows[:, :, None] & cols[:, None, :])[:, None], colours[:, :, None, None],
                    images).astype(np.uint8)  # fmt: skip


def balanced_labels(per_class: int, classes: int = LEARNED, seed: int = 0) -> np.ndarray:
    """``per_class`` labels of each of ``classes`` classes, shuffled."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(classes), per_class))


def write_cifar100(root: Path, per_class: int = 24, test_per_class: int = 8) -> Path:
    """``root/cifar-100-python/{train,test,meta}``: pickled dicts with b"data" uint8 (N, 3072),
    b"fine_labels" and b"coarse_labels"; meta's b"fine_label_names" (100 names). Labels 0..9."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", per_class, 0), ("test", test_per_class, 1)):
        labels = balanced_labels(count, seed=seed)
        batch = {b"data": squares(labels, seed=seed).reshape(len(labels), -1),
                 b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist(),
                 b"filenames": [], b"batch_label": split.encode()}  # fmt: skip
        (folder / split).write_bytes(pickle.dumps(batch))
    names = [f"class_{k:02d}".encode() for k in range(100)]
    meta = {b"fine_label_names": names, b"coarse_label_names": [b"coarse"] * 20}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return root


def write_svhn(root: Path, per_class: int = 24, test_per_class: int = 8) -> Path:
    """``root/svhn/{train,test}_32x32.mat`` (MATLAB v5, as the official files): X uint8
    (32, 32, 3, N), y (N, 1) in 1..10 with 10 for the digit 0."""
    from scipy.io import savemat

    folder = root / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", per_class, 0), ("test", test_per_class, 1)):
        labels = balanced_labels(count, seed=seed)
        x = squares(labels, seed=seed).transpose(2, 3, 1, 0)  # (N, 3, H, W) -> (H, W, 3, N)
        y = np.where(labels == 0, 10, labels).astype(np.uint8)[:, None]
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
    return root


def _write_images(files: list[Path], images: np.ndarray) -> None:
    for file, image in zip(files, images.transpose(0, 2, 3, 1), strict=True):  # (N, H, W, 3)
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(file, **({"quality": 95} if file.suffix == ".JPEG" else {}))


def write_cinic10(root: Path, classes: tuple[str, ...], per_class: int = 24,
                  test_per_class: int = 8) -> Path:  # fmt: skip
    """``root/cinic-10/{train,valid,test}/<class>/*.png``, ``classes`` the 10 folder names."""
    for split, count, seed in (("train", per_class, 0), ("valid", test_per_class, 2),
                               ("test", test_per_class, 1)):  # fmt: skip
        labels = balanced_labels(count, seed=seed)
        files = [root / "cinic-10" / split / classes[k] / f"cifar10-{split}-{i}.png"
                 for i, k in enumerate(labels)]  # fmt: skip
        _write_images(files, squares(labels, seed=seed))
    return root


def tiny_imagenet_wnids() -> list[str]:
    """200 made-up WordNet ids in a shuffled (not sorted) order, as wnids.txt lists them."""
    return [f"n{k:08d}" for k in np.random.default_rng(3).permutation(np.arange(1000, 1200))]


def write_tiny_imagenet(root: Path, per_class: int = 24, test_per_class: int = 8) -> Path:
    """``root/tiny-imagenet-200/``: wnids.txt, words.txt, train/<wnid>/images/<wnid>_<i>.JPEG
    (64x64) and <wnid>_boxes.txt, val/images/val_<i>.JPEG with val/val_annotations.txt. The
    first ``LEARNED`` wnids in sorted order get ``per_class`` images, the other 190 one each."""
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True, exist_ok=True)
    wnids = tiny_imagenet_wnids()
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    words = [f"{w}\tthing {w[-3:]}, a made-up class" for w in sorted(wnids)] + ["n99999999\tother"]
    (folder / "words.txt").write_text("\n".join(words) + "\n")
    order = sorted(wnids)  # label k is the k-th wnid in sorted order
    labels = np.concatenate([balanced_labels(per_class), np.arange(LEARNED, 200)])
    files = []
    for i, k in enumerate(labels):
        files.append(folder / "train" / order[k] / "images" / f"{order[k]}_{i}.JPEG")
        (folder / "train" / order[k]).mkdir(parents=True, exist_ok=True)
        (folder / "train" / order[k] / f"{order[k]}_boxes.txt").write_text("")
    _write_images(files, squares(labels, size=64))
    val = balanced_labels(test_per_class, seed=1)
    _write_images([folder / "val" / "images" / f"val_{i}.JPEG" for i in range(len(val))],
                  squares(val, size=64, seed=1))  # fmt: skip
    notes = [f"val_{i}.JPEG\t{order[k]}\t0\t0\t63\t63" for i, k in enumerate(val)]
    (folder / "val" / "val_annotations.txt").write_text("\n".join(notes) + "\n")
    return root
