"""Checkpoint files: round trip, atomic replace, and clear errors for damaged or foreign files;
files of the earlier envelope format still load."""

import errno
import hashlib
import io
import json
import os

import pytest
import torch

import vitlib
from vitlib.checkpoint import (
    FORMAT_VERSION,
    MAGIC,
    CheckpointError,
    compare_with_model,
    load_checkpoint,
    save_checkpoint,
)


class Foreign:
    """An arbitrary Python object, which weights_only loading must refuse."""


def state(value: float = 1.0) -> dict:
    return {"model": {"w": torch.full((3, 4), value)}, "epoch": 3, "mean": torch.tensor(0.5)}


def envelope(path, value: float = 1.0):
    """``state(value)`` in the envelope format of vitlib's first checkpoints."""
    buffer = io.BytesIO()
    torch.save(state(value), buffer)
    payload = buffer.getvalue()
    header = {"format_version": FORMAT_VERSION, "payload_bytes": len(payload),
              "sha256": hashlib.sha256(payload).hexdigest()}  # fmt: skip
    path.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + payload)
    return path


def test_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", state(2.0))
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.full((3, 4), 2.0)) and loaded["epoch"] == 3
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "last.pt.sha256"]  # no temporary file


def test_replace_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", state(1.0))

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(
        OSError, match=r"could not write checkpoint .*last\.pt.*No space left.*unchanged"
    ):
        save_checkpoint(path, state(9.0))
    monkeypatch.undo()
    assert load_checkpoint(path)["model"]["w"][0, 0] == 1.0
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "last.pt.sha256"]


def test_unwritable_directory_is_a_clear_error(tmp_path, monkeypatch):
    real_open = open

    def refuse(file, mode="r", *args, **kwargs):
        if "w" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(OSError, match=r"could not write checkpoint .*best\.pt: Permission denied"):
        save_checkpoint(tmp_path / "best.pt", state())


def test_truncated_file(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"last\.pt is corrupted: sha256 .*truncated"):
        load_checkpoint(path)
    old = envelope(tmp_path / "old.pt")
    old.write_bytes(old.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"old\.pt is truncated"):
        load_checkpoint(old)


def test_envelope_files_still_load_and_convert(tmp_path):
    old = envelope(tmp_path / "old.pt", 4.0)
    converted = save_checkpoint(tmp_path / "new.pt", load_checkpoint(old))
    for path in (old, converted):
        assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((3, 4), 4.0))
    assert torch.load(converted, weights_only=True)["epoch"] == 3


def test_corrupted_payload(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", state())
    data = bytearray(path.read_bytes())
    data[-50] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"last\.pt is corrupted: sha256"):
        load_checkpoint(path)


def test_damaged_header(tmp_path):
    path = envelope(tmp_path / "last.pt")
    path.write_bytes(path.read_bytes().replace(b'"sha256"', b'"sha2XX"', 1))
    with pytest.raises(CheckpointError, match="damaged header"):
        load_checkpoint(path)


def test_foreign_files(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match=r"plain\.pt is a torch\.save zip archive without"):
        load_checkpoint(plain)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.txt is not a vitlib checkpoint .*unknown"):
        load_checkpoint(text)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_newer_format_version(tmp_path):
    path = envelope(tmp_path / "last.pt")
    path.write_bytes(path.read_bytes().replace(b'"format_version": 1', b'"format_version": 7', 1))
    with pytest.raises(CheckpointError, match="format version 7"):
        load_checkpoint(path)


def test_unsafe_payload_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"obj": Foreign()})
    with pytest.raises(
        CheckpointError, match=r"last\.pt: safe loading \(weights_only=True\) refused"
    ):
        load_checkpoint(path)


def test_compare_with_model_lists_mismatches():
    import dataclasses

    small = vitlib.create_model("vit_cifar10_small", depth=2)
    same = {"model_config": dataclasses.asdict(small.config), "model": small.state_dict()}
    assert compare_with_model(same, small) == []
    other = vitlib.create_model("vit_cifar10_small", depth=1, num_classes=5)
    problems = compare_with_model(same, other)
    assert "config depth: checkpoint 2, model 1" in problems
    assert "config num_classes: checkpoint 10, model 5" in problems
    assert any(p.startswith("missing in model: blocks.1.") for p in problems)
    assert "shape of head.weight: checkpoint (10, 128), model (5, 128)" in problems
