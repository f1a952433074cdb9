"""CIFAR-10 downloads are checked against the official checksums by torchvision and retried; a
local copy that is not byte-identical to the official files is accepted on its structure."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
import torchvision.datasets.utils as tv_utils
from helpers import assert_shuffles_and_only_converts
from torchvision.datasets import CIFAR10

from vitlib import data as D


def synthetic_archive() -> tuple[bytes, bytes, bytes]:
    """(cifar-10-python.tar.gz holding a test_batch of label-7 images and batches.meta,
    that test_batch, that batches.meta)."""
    batch = pickle.dumps(
        {"data": np.zeros((10_000, 3072), np.uint8), "labels": [7] * 10_000}, protocol=2
    )
    for key in (b"data", b"labels"):  # Python 2 str keys, as in the official files
        unicode_key = b"X" + len(key).to_bytes(4, "little") + key
        batch = batch.replace(unicode_key, b"U" + bytes([len(key)]) + key)
    meta = pickle.dumps({"label_names": list(D.CLASSES)}, protocol=2)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for name, content in (("test_batch", batch), ("batches.meta", meta)):
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue(), batch, meta


@pytest.fixture
def server(monkeypatch):
    """A fake network behind torchvision's real download-and-verify code: ``server.responses``
    is the list of answers (an exception or bytes), one per request."""
    archive, batch, meta = synthetic_archive()
    md5 = hashlib.md5
    # These stand in for the official checksums that torchvision verifies.
    monkeypatch.setattr(CIFAR10, "tgz_md5", md5(archive).hexdigest())
    monkeypatch.setattr(CIFAR10, "train_list", [])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5(batch).hexdigest()]])
    monkeypatch.setattr(
        CIFAR10,
        "meta",
        {"filename": "batches.meta", "key": "label_names", "md5": md5(meta).hexdigest()},
    )
    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops: url)
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # the waits between attempts

    class Server:
        archive = b""
        responses: list = []
        requests = 0

        def retrieve(self, url, path):
            self.requests += 1
            answer = self.responses.pop(0)
            if isinstance(answer, Exception):
                raise answer
            with open(path, "wb") as f:
                f.write(answer)

    fake = Server()
    fake.archive = archive
    monkeypatch.setattr(tv_utils, "_urlretrieve", fake.retrieve)
    return fake


def test_download_retries_until_the_checksum_matches(server, tmp_path):
    # attempt 1: network down (https, then torchvision's http fallback); attempt 2: a damaged
    # archive that fails the md5 check; attempt 3: the real archive.
    server.responses = [OSError("reset"), OSError("reset"), b"garbage" * 100, server.archive]
    images, labels = D.load_cifar10(tmp_path, split="test", download=True)
    assert server.requests == 4 and (labels == 7).all() and images.shape == (10_000, 3, 32, 32)


def test_download_gives_up_naming_the_problem(server, tmp_path):
    server.responses = [b"truncated"] * 3
    with pytest.raises(RuntimeError, match=r"Downloading CIFAR-10 into .* failed 3 times"):
        D.load_cifar10(tmp_path, split="test", download=True)
    assert server.requests == 3
    assert not (tmp_path / "cifar-10-batches-py").exists()  # nothing unverified was extracted


def test_local_copy_with_other_bytes_is_accepted(real_cifar_root):
    """The shared copy is a rebuilt pickle (its md5 differs from the official one), which
    torchvision's own CIFAR10 class would reject; the structural checks accept it."""
    official = dict(CIFAR10.test_list)["test_batch"]
    path = real_cifar_root / "cifar-10-batches-py" / "test_batch"
    if hashlib.md5(path.read_bytes()).hexdigest() == official:
        pytest.skip("this copy is byte-identical to the official files")
    _, labels = D.load_cifar10(real_cifar_root, split="test", limit=10_000)
    assert len(labels) == 10_000 and labels[:3].tolist() == [3, 8, 8]


@pytest.mark.parametrize("missing", ["data_batch_3", "test_batch"])
def test_a_missing_batch_file_is_named(cifar_root, tmp_path, missing):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in (*D.CIFAR10_FILES["train"], *D.CIFAR10_FILES["test"]):
        if name != missing:
            (folder / name).symlink_to(cifar_root / "cifar-10-batches-py" / name)
    split = "test" if missing == "test_batch" else "train"
    with pytest.raises(FileNotFoundError, match=f"CIFAR-10: .*{missing} is missing"):
        D.load_cifar10(tmp_path, split=split)


def test_loader_without_augmentation_shuffles_and_only_converts():
    # (the same for bench/pil_loader.py: tests/test_bench_pil_loader.py)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(40)
    loader = D.DeviceLoader(images, labels, 8, train=True, seed=3, augment="none")
    assert_shuffles_and_only_converts(loader, images, labels)
