"""Loading CIFAR-10 (real data and broken copies) and the DeviceLoader (the PIL loader of the
benchmarks: tests/test_bench_pil_loader.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import epoch_batches, labelled_images

from vitlib import data as D


def test_train_split_known_pixels_and_labels(real_cifar_root):
    """Values of the real CIFAR-10 as published: the batches are decoded in the right order and
    layout (channel-major rows of 3,072 bytes)."""
    images, labels = D.load_cifar10(real_cifar_root, split="train")
    assert images.shape == (50_000, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (50_000,) and labels.dtype == torch.int64
    assert labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert [D.CLASSES[k] for k in labels[:3]] == ["frog", "truck", "truck"]  # the published names
    assert labels[9994:10_000].tolist() == [6, 3, 9, 1, 1, 5]
    assert images[0, 0].flatten()[:3].tolist() == [59, 43, 50]
    assert images[0, 2].flatten()[-3:].tolist() == [140, 84, 72]
    assert images[1, 0].flatten()[:3].tolist() == [154, 126, 105]
    assert torch.bincount(labels).tolist() == [5000] * 10


def test_batches_are_decoded_in_order_and_layout(cifar_root):
    """Whatever the copy (real or synthetic): the images are the batch files' rows, channel-major,
    file after file."""
    folder = cifar_root / "cifar-10-batches-py"
    images, labels = D.load_cifar10(cifar_root, split="train", limit=10_002)
    second = pickle.loads((folder / "data_batch_2").read_bytes(), encoding="bytes")
    assert labels[10_000:].tolist() == second[b"labels"][:2]
    row = torch.from_numpy(second[b"data"][1])
    assert torch.equal(images[10_001].flatten(), row)
    assert torch.equal(images[10_001, 1, 0, :3], row[1024:1027])  # green plane after the red


def test_test_split_and_limit(cifar_root):
    all_images, all_labels = D.load_cifar10(cifar_root, split="test")
    images, labels = D.load_cifar10(cifar_root, split="test", limit=12)
    assert images.shape == (12, 3, 32, 32) and len(all_labels) == 10_000
    assert torch.equal(labels, all_labels[:12]) and torch.equal(images, all_images[:12])
    images, labels = D.load_cifar10(cifar_root, split="train", limit=10_005)
    assert len(images) == len(labels) == 10_005
    with pytest.raises(ValueError, match="split"):
        D.load_cifar10(cifar_root, split="val")


def test_explicit_root_beats_env(cifar_root, monkeypatch, tmp_path):
    monkeypatch.setenv("VITLIB_DATA", str(tmp_path / "nowhere"))
    cifar10, folder = D.DATASETS["CIFAR-10"], cifar_root / "cifar-10-batches-py"
    assert D.locate(cifar10, cifar_root) == folder
    assert D.locate(cifar10, None) == tmp_path / "nowhere"
    assert D.locate(cifar10, folder) == folder  # the dataset's own folder
    _, labels = D.load_cifar10(cifar_root, split="test", limit=3)
    assert len(labels) == 3
    with pytest.raises(FileNotFoundError, match="nowhere"):
        D.load_cifar10(split="test")


def test_no_root_at_all_says_how_to_fix(monkeypatch):
    monkeypatch.delenv("VITLIB_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="No CIFAR-10 location given. Set VITLIB_DATA"):
        D.load_cifar10(None)


def test_missing_folder_says_how_to_fix(tmp_path):
    # (a missing batch file: tests/reliability/test_data_files.py)
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10: .*test_batch is missing\. Expected the "
                       r"official layout cifar-10-batches-py/.*VITLIB_DATA"):  # fmt: skip
        D.load_cifar10(tmp_path, split="test")


def _write_batch(root: Path, data: object, labels: object) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": data, b"labels": labels}, f, protocol=2)
    return folder / "test_batch"


def _zeros(rows: int = 10_000, dtype=np.uint8) -> np.ndarray:
    return np.zeros((rows, 3072), dtype=dtype)


@pytest.mark.parametrize(
    "data, labels, message",
    [
        (np.zeros((10, 3000), np.uint8), [0] * 10, r"uint8 array \(N, 3072\), found uint8 \(10, 3000\)"),
        (_zeros(dtype=np.float32), [0] * 10_000, r"found float32 \(10000, 3072\)"),
        (_zeros(), [0] * 9_999, "list of 10000 labels, found 9999"),
        (_zeros(), [0] * 9_999 + [10], r"1 labels outside 0..9 \(first: 10 at index 9999\)"),
        (_zeros(), [-1] + [0] * 9_999, "outside 0..9"),
        ([[0] * 3072], [0], "should be a uint8 array .*, found list"),
    ],
)
def test_structurally_broken_batch(tmp_path, data, labels, message):
    path = _write_batch(tmp_path, data, labels)
    with pytest.raises(ValueError, match=message) as err:
        D.load_cifar10(tmp_path, split="test")
    assert str(path) in str(err.value)


def test_truncated_batch(cifar_root, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    source = (cifar_root / "cifar-10-batches-py" / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(source[:100_000])
    with pytest.raises(ValueError, match="truncated or corrupt") as err:
        D.load_cifar10(tmp_path, split="test")
    assert str(folder / "test_batch") in str(err.value)


def test_download_only_when_asked_and_missing(tmp_path, monkeypatch):
    # (retries and checksums through torchvision's own download code: test_data_files.py)
    import torchvision.datasets

    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            _write_batch(Path(root), _zeros(), [7] * 10_000)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    with pytest.raises(FileNotFoundError):
        D.load_cifar10(tmp_path, split="test")
    assert calls == []
    _, labels = D.load_cifar10(tmp_path, split="test", download=True)
    assert calls == [(str(tmp_path), False, True)] and (labels == 7).all()
    D.load_cifar10(tmp_path, split="test", download=True)  # present now: no new download
    assert len(calls) == 1


def test_device_loader_shards_are_disjoint_and_cover_all():
    images, ids = labelled_images(96)
    seen = []
    for rank in range(3):
        loader = D.DeviceLoader(images, ids, 8, train=True, seed=5, rank=rank, world_size=3)
        batches = epoch_batches(loader, 1)
        assert len(batches) == len(loader) == 4
        seen.append(torch.cat([y for _, y in batches]))
    assert all(len(s) == 32 for s in seen)
    assert sorted(torch.cat(seen).tolist()) == list(range(96))


def test_device_loader_uneven_remainder():
    images, ids = labelled_images(10)
    kept = [
        D.shard_indices(10, shuffle=True, seed=0, epoch=0, rank=r, world_size=3) for r in range(3)
    ]
    assert [len(k) for k in kept] == [3, 3, 3] and len(set(torch.cat(kept).tolist())) == 9
    loader = D.DeviceLoader(images, ids, 4, train=False, world_size=3, rank=0)
    assert [y.tolist() for _, y in loader] == [[0, 3, 6, 9]]  # no drop: strided share of all
    with pytest.raises(ValueError, match="rank=3"):
        D.shard_indices(10, shuffle=True, seed=0, epoch=0, rank=3, world_size=3)


def test_device_loader_replays_an_epoch_and_changes_across_epochs():
    images, ids = labelled_images(40)
    a = D.DeviceLoader(images, ids, 16, train=True, seed=1)
    b = D.DeviceLoader(images, ids, 16, train=True, seed=1)
    first, replay = epoch_batches(a, 2), epoch_batches(b, 2)
    assert len(first) == 2  # drop_last for training
    for (x1, y1), (x2, y2) in zip(first, replay):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert x1.dtype == torch.float32 and x1.shape == (16, 3, 32, 32) and y1.dtype == torch.int64
        assert 0 <= x1.min() and x1.max() <= 1
    later = epoch_batches(a, 3)
    assert not torch.equal(first[0][1], later[0][1])
    other_seed = epoch_batches(D.DeviceLoader(images, ids, 16, train=True, seed=2), 2)
    assert not torch.equal(first[0][1], other_seed[0][1])
    plain = images[first[0][1]].float() / 255
    assert not torch.equal(first[0][0], plain)  # augmented


def test_epoch_images_draws_a_fresh_subset_each_epoch():
    images, ids = labelled_images(100)
    loader = D.DeviceLoader(images, ids, 10, train=True, seed=3, epoch_images=30)
    assert len(loader) == 3
    subsets = [set(torch.cat([y for _, y in epoch_batches(loader, e)]).tolist()) for e in (0, 1)]
    assert all(len(s) == 30 for s in subsets) and subsets[0] != subsets[1]
    whole = D.shard_indices(100, shuffle=True, seed=3, epoch=1)
    assert sorted(subsets[1]) == sorted(whole[:30].tolist())  # the first 30 of the epoch's order
    shares = [D.shard_indices(100, shuffle=True, seed=3, epoch=1, rank=r, world_size=2, limit=30)
              for r in range(2)]  # fmt: skip
    assert sorted(torch.cat(shares).tolist()) == sorted(whole[:30].tolist())


def test_device_loader_eval_is_plain_and_ordered():
    images, ids = labelled_images(20)
    loader = D.DeviceLoader(images, ids, 8, train=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and [len(y) for _, y in batches] == [8, 8, 4]
    assert torch.equal(torch.cat([x for x, _ in batches]), images.float() / 255)
    assert torch.equal(torch.cat([y for _, y in batches]), ids)
    with pytest.raises(ValueError, match="uint8"):
        D.DeviceLoader(images.float(), ids, 8, train=False)
