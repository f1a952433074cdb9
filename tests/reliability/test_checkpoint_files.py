"""Checkpoint files that are truncated, corrupted, foreign, malicious or from another model are
refused with the file and the problem named; failed writes leave the last good file intact.
A checkpoint is a plain torch archive with a .sha256 beside it."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import random

import pytest
import torch
from helpers import tiny_argv

import vitlib
import vitlib.checkpoint as ckpt
from vitlib.checkpoint import (
    CheckpointError,
    checksum_path,
    compare_with_model,
    load_checkpoint,
    save_checkpoint,
)
from vitlib.train import main

SMALL = {"depth": 1, "dim": 32, "head_channels": 16}


def small_state(value: float = 1.0) -> dict:
    return {"model": {"w": torch.full((64, 64), value)}, "epoch": 3, "step": 7}


class Exploit:
    """Unpickling this runs ``touch MARKER`` (if the loader executes code from the file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def with_checksum(path, data: bytes):
    """Write ``data`` to ``path`` with a matching ``path.sha256`` beside it."""
    path.write_bytes(data)
    checksum_path(path).write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
    return path


def test_crafted_pickle_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    buffer = io.BytesIO()
    torch.save({"model": Exploit(marker)}, buffer)
    with_checksum(tmp_path / "checksummed_zip.pt", buffer.getvalue())  # passes integrity checks
    files = {
        "torch_save.pt": buffer.getvalue(),
        "plain_pickle.pt": pickle.dumps({"model": Exploit(marker)}),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    for name in [*files, "checksummed_zip.pt"]:
        with pytest.raises(CheckpointError, match=name):
            load_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match=r"weights_only=True\) refused"):
        load_checkpoint(tmp_path / "checksummed_zip.pt")
    assert not marker.exists()


def test_every_truncation_and_corruption_is_refused(tmp_path):
    """Cuts at 40 random lengths and 40 random flipped bytes: every one is refused and names the
    file (the checksum beside it is intact); the good copy still loads."""
    good = save_checkpoint(tmp_path / "last.pt", small_state())
    data = good.read_bytes()
    chance = random.Random(0)
    bad = tmp_path / "bad.pt"
    checksum_path(bad).write_text(checksum_path(good).read_text().replace("last", "bad"))
    cuts = [0, 5, 21] + chance.sample(range(1, len(data)), 37)
    for cut in cuts:
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"bad\.pt"):
            load_checkpoint(bad)
    for position in chance.sample(range(len(data)), 40):
        flipped = bytearray(data)
        flipped[position] ^= 1 << chance.randrange(8)
        bad.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match=r"bad\.pt (is|has)"):
            load_checkpoint(bad)
    bad.write_bytes(data + b"extra")
    with pytest.raises(
        CheckpointError, match=r"bad\.pt is (truncated or padded|corrupted.*padded)"
    ):
        load_checkpoint(bad)
    assert torch.equal(load_checkpoint(good)["model"]["w"], small_state()["model"]["w"])


def test_a_checkpoint_is_a_plain_torch_archive_with_a_sha256sum_file(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", small_state(2.0))
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.full((64, 64), 2.0))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert checksum_path(path).read_text() == f"{digest}  last.pt\n"  # `sha256sum -c` reads it
    checksum_path(path).unlink()
    with pytest.raises(CheckpointError, match=r"last\.pt .* without its checksum .*sha256sum last"):
        load_checkpoint(path)


def test_a_crash_while_replacing_a_checkpoint_leaves_one_that_verifies(tmp_path, monkeypatch):
    """save_checkpoint writes the checksum file (old and new sha256), the checkpoint, then the
    checksum file (new only): a crash after any of these writes leaves a loadable last.pt."""
    path = save_checkpoint(tmp_path / "last.pt", small_state(1.0))
    real_write = ckpt.write_atomic
    for crash_after in (1, 2):
        writes = []

        def crashing_write(target, *chunks, writes=writes, crash_after=crash_after):
            real_write(target, *chunks)
            writes.append(target)
            if len(writes) == crash_after:
                raise OSError(errno.EIO, "simulated crash")

        monkeypatch.setattr(ckpt, "write_atomic", crashing_write)
        with pytest.raises(OSError, match="could not write checkpoint"):
            save_checkpoint(path, small_state(1.0 + crash_after))
        monkeypatch.undo()
        expected = 1.0 if crash_after == 1 else 3.0  # the old file, then the new one
        assert load_checkpoint(path)["model"]["w"][0, 0] == expected
        assert len(checksum_path(path).read_text().splitlines()) == 2  # both sha256 accepted
        save_checkpoint(path, small_state(expected))  # back to a settled state


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("empty.pt", b"", "unknown format"),
        ("zip.pt", None, "torch.save zip archive"),
        ("notes.txt", b"epoch 3\n", "unknown format"),
        ("numpy.npy", b"\x93NUMPY\x01\x00", "unknown format"),
        ("wrong_magic.pt", b"VITLIB-CHECKPOINTS\n{}\n", "unknown format"),
    ],
)  # fmt: skip
def test_foreign_files_are_refused(tmp_path, name, content, problem):
    path = tmp_path / name
    if content is None:
        torch.save({"model": {"w": torch.zeros(2)}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"{name}.*{problem}"):
        load_checkpoint(path)


def test_incompatible_checkpoint_lists_every_mismatch(tmp_path):
    small = vitlib.create_model("vit_cifar10_small", **SMALL)
    path = save_checkpoint(
        tmp_path / "small.pt",
        {"model": small.state_dict(), "model_config": vars(small.config).copy()},
    )
    seed_model = vitlib.create_model("vit_cifar10_patch2_input32", depth=1)
    before = {k: v.clone() for k, v in seed_model.state_dict().items()}
    message = "\n".join(compare_with_model(load_checkpoint(path), seed_model))
    for line in (
        "config dim: checkpoint 32, model 256",
        "config patch_size: checkpoint 4, model 2",
        "shape of head.weight: checkpoint (10, 32), model (10, 256)",
        "shape of pos_embedding: checkpoint (32, 8, 8), model (256, 16, 16)",
    ):
        assert line in message
    assert all(torch.equal(before[k], v) for k, v in seed_model.state_dict().items())
    same = vitlib.create_model("vit_cifar10_small", **SMALL, attention="teaching")
    assert compare_with_model(load_checkpoint(path), same) == []  # the form keeps the weights


class FullDisk:
    """A file object that writes ``room`` bytes, then fails with ENOSPC (disk full)."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.file.write(data[: self.room])
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def fill_disk_after(monkeypatch, saves: int) -> None:
    """Let ``saves`` atomic writes (checkpoints, config.json) succeed, then fail every later one
    half-way through."""
    count = []

    def fake_open(path, mode="r", *args, **kwargs):
        file = open(path, mode, *args, **kwargs)
        count.append(path)
        return FullDisk(file, 1000) if len(count) > saves else file

    monkeypatch.setattr(ckpt, "open", fake_open, raising=False)


def test_disk_full_mid_write_stops_the_run_and_keeps_the_last_checkpoint(
    tmp_path, cifar_root, monkeypatch, capsys
):
    run = tmp_path / "run"
    # config.json, then epoch 1: last.pt and best.pt, each with its checksum file written twice
    fill_disk_after(monkeypatch, saves=7)
    assert main(tiny_argv(run, cifar_root, "--epochs", "2")) == 1
    err = capsys.readouterr().err
    assert f"could not write checkpoint {run / 'last.pt'}: No space left on device" in err
    assert "stopped at step 12" in err and "Free disk space" in err and "--resume" in err
    monkeypatch.undo()
    assert load_checkpoint(run / "last.pt")["epoch"] == 1  # the last good checkpoint, intact
    assert not list(run.glob(".*tmp*")) and not (run / "run.lock").exists()
    assert main(tiny_argv(run, cifar_root, "--epochs", "2", "--resume")) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_read_only_directory_is_a_clear_error(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", small_state(1.0))

    def read_only(file, mode="r", *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(file))

    monkeypatch.setattr(ckpt, "open", read_only, raising=False)
    with pytest.raises(OSError, match=r"could not write checkpoint .*last\.pt: Read-only"):
        save_checkpoint(path, small_state(2.0))
    monkeypatch.undo()
    assert load_checkpoint(path)["model"]["w"][0, 0] == 1.0
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "last.pt.sha256"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_for_real(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", small_state(1.0))
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(OSError, match=r"could not write checkpoint .*Permission denied"):
            save_checkpoint(path, small_state(2.0))
    finally:
        tmp_path.chmod(0o755)
    assert load_checkpoint(path)["model"]["w"][0, 0] == 1.0


def test_resume_refuses_a_damaged_last_checkpoint_and_keeps_the_files(tmp_path, cifar_root, capsys):
    run = tmp_path / "run"
    assert main(tiny_argv(run, cifar_root, "--epochs", "1")) == 0
    damaged = bytearray((run / "last.pt").read_bytes())
    damaged[-10] ^= 0xFF
    (run / "last.pt").write_bytes(bytes(damaged))
    assert main(tiny_argv(run, cifar_root, "--epochs", "1", "--resume")) == 1
    assert f"{run / 'last.pt'} is corrupted: sha256" in capsys.readouterr().err
    assert (run / "last.pt").read_bytes() == bytes(damaged)  # refused, not overwritten
    assert load_checkpoint(run / "best.pt")["epoch"] == 1
