"""Checkpoint files: plain ``torch.save`` archives with a sha256 checksum beside them, checked
before loading (PyTorch's zip reader ignores its CRCs), written atomically (docs/reliability.md).

    last.pt          torch.save(state): torch.load("last.pt", weights_only=True)["model"] works
    last.pt.sha256   "<sha256 of last.pt>  last.pt", the format of ``sha256sum``:
                     ``sha256sum -c last.pt.sha256`` checks the file without Python"""

import dataclasses
import hashlib
import io
import os
from pathlib import Path

import torch
from torch import nn

# ModelConfig fields that leave the weights as they are: a checkpoint loads despite them.
WEIGHT_NEUTRAL_FIELDS = frozenset({"attention", "dropout", "head_dropout"})


class CheckpointError(ValueError):
    """A file that is not a readable vitlib checkpoint; the message names the file."""


def checksum_path(path: Path) -> Path:
    """Where the sha256 of checkpoint ``path`` is kept: ``path`` + ``.sha256``."""
    return path.with_name(path.name + ".sha256")


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically, its sha256
    to ``path.sha256``; a failure raises ``OSError`` naming it (a previous file still verifies)."""
    path, buffer = Path(path), io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    try:  # the checksum file lists the old and the new digest while the file is replaced
        write_atomic(checksum_path(path), _checksum_lines(path, [digest, *_listed_digests(path)]))
        write_atomic(path, data)
        write_atomic(checksum_path(path), _checksum_lines(path, [digest]))
    except OSError as e:
        kept = "the previous checkpoint there is unchanged" if path.exists() else "nothing written"
        message = f"could not write checkpoint {path}: {e.strerror or e} ({kept})"
        raise OSError(e.errno, message) from e
    return path


def _listed_digests(path: Path) -> list[str]:
    """The sha256 digests ``path.sha256`` accepts for ``path`` (none if it does not exist)."""
    sums = checksum_path(path)
    lines = sums.read_text(errors="replace").splitlines() if sums.is_file() else []
    return [line.split()[0] for line in lines if line.strip()]


def _checksum_lines(path: Path, digests: list[str]) -> bytes:
    return "".join(f"{d}  {path.name}\n" for d in digests).encode()


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, whole or not at all: a temporary file in the same folder,
    fsynced, renamed over ``path``, the folder fsynced (atomicwrites is unmaintained since 2022)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename durable (POSIX)
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The verified ``state`` of a ``save_checkpoint`` file. FileNotFoundError if absent; else a
    CheckpointError naming it for a missing or wrong checksum, another format or unsafe objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    if not data.startswith(b"PK"):
        raise CheckpointError(f"{path} is not a vitlib checkpoint (it looks like an unknown "
                              "format, not a torch.save zip archive); checkpoints are written by "
                              "vitlib.checkpoint.save_checkpoint")  # fmt: skip
    sums = checksum_path(path)
    if not sums.is_file():
        raise CheckpointError(f"{path} is a torch.save zip archive without its checksum "
                              f"{sums.name}, so its integrity cannot be checked: copy {sums.name} "
                              "along with it, or, if you trust the file, write one with `sha256sum "
                              f"{path.name} > {sums.name}` in {path.parent}")  # fmt: skip
    if hashlib.sha256(data).hexdigest() not in _listed_digests(path):
        raise CheckpointError(f"{path} is corrupted: sha256 of its {len(data):,} bytes does not "
                              f"match {sums.name} (truncated, padded or damaged); use an intact "
                              "copy such as best.pt")  # fmt: skip
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: safe loading (weights_only=True) refused it: {e}") from e


def compare_with_model(state: dict, model: nn.Module) -> list[str]:
    """How a checkpoint ``state`` (keys ``model_config``, ``model``) differs from ``model``: config
    fields (except ``WEIGHT_NEUTRAL_FIELDS``), missing/unexpected parameters, shapes; [] if none."""
    saved_config = state.get("model_config", {})
    config = dataclasses.asdict(model.config) if hasattr(model, "config") else {}
    saved, current = state["model"], model.state_dict()
    return (
        [f"config {k}: checkpoint {saved_config.get(k)!r}, model {config.get(k)!r}"
         for k in sorted((set(saved_config) | set(config)) - WEIGHT_NEUTRAL_FIELDS)
         if saved_config.get(k) != config.get(k)]
        + [f"missing in model: {k}" for k in sorted(saved.keys() - current.keys())]
        + [f"missing in checkpoint: {k}" for k in sorted(current.keys() - saved.keys())]
        + [f"shape of {k}: checkpoint {tuple(saved[k].shape)}, model {tuple(current[k].shape)}"
           for k in sorted(saved.keys() & current.keys()) if saved[k].shape != current[k].shape]
    )  # fmt: skip
