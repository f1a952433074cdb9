"""Checkpoint files: atomic writes, a format version, a sha256 checksum and safe loading.

Layout of a ``.pt`` file written here::

    b"VITLIB-CHECKPOINT\\n"
    {"format_version": 1, "sha256": "<hex of payload>", "payload_bytes": N}\\n   (one JSON line)
    payload: N bytes of torch.save(state)

``load_checkpoint`` checks the magic line, the version, the length (truncation) and the checksum
(corruption) before unpickling the payload with ``torch.load(weights_only=True)``, which refuses
arbitrary Python objects. Writes go to a temporary file in the same directory, are fsynced and
then renamed over the target, so an existing checkpoint is replaced whole or not at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from pathlib import Path

import torch
from torch import nn

MAGIC = b"VITLIB-CHECKPOINT\n"
FORMAT_VERSION = 1
# ModelConfig fields that do not change the weights (same state_dict, same numbers or only
# training-time behaviour): a checkpoint loads into a model that differs only in these.
WEIGHT_NEUTRAL_FIELDS = frozenset({"attention", "dropout", "head_dropout"})


class CheckpointError(ValueError):
    """A file that is not a readable vitlib checkpoint; the message names the file."""


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically.

    On any failure (disk full, unwritable directory) raises ``OSError`` naming the file; the
    previous file at ``path``, if any, is left untouched and no temporary file remains.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = {
        "format_version": FORMAT_VERSION,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload_bytes": len(payload),
    }
    try:
        write_atomic(path, MAGIC, json.dumps(header).encode() + b"\n", payload)
    except OSError as e:
        kept = "the previous checkpoint there is unchanged" if path.exists() else "nothing written"
        raise OSError(
            e.errno, f"could not write checkpoint {path}: {e.strerror or e} ({kept})"
        ) from e
    return path


def write_atomic(path: Path, *chunks: bytes) -> None:
    """Replace ``path`` with the ``chunks``, written in order, whole or not at all: a temporary file in the same
    directory, fsynced, renamed over ``path``, then the directory fsynced. On ``OSError`` the
    previous file is untouched and the temporary file is removed."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and verify a checkpoint written by ``save_checkpoint``; returns its ``state``.

    Raises FileNotFoundError if absent and CheckpointError (naming the file) if it is not a
    vitlib checkpoint, comes from a newer format, is truncated, fails its checksum or holds
    objects that safe loading refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        kind = "a plain torch.save zip archive" if data.startswith(b"PK") else "an unknown format"
        raise CheckpointError(
            f"{path} is not a vitlib checkpoint (it looks like {kind}); "
            "checkpoints are written by vitlib.checkpoint.save_checkpoint"
        )
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise CheckpointError(f"{path} is truncated inside its header; use an intact copy")
    try:
        header = json.loads(data[len(MAGIC) : end])
        version, digest, size = header["format_version"], header["sha256"], header["payload_bytes"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path} has a damaged header; the file is corrupted") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this vitlib reads version "
            f"{FORMAT_VERSION} (upgrade vitlib to read newer checkpoints)"
        )
    payload = data[end + 1 :]
    if len(payload) != size:
        raise CheckpointError(
            f"{path} is truncated or padded: payload has {len(payload)} bytes, header says {size} "
            "(an interrupted copy?); use an intact copy such as best.pt"
        )
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{path} is corrupted: sha256 of the payload does not match")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: safe loading (weights_only=True) refused it: {e}") from e


def compare_with_model(state: dict, model: nn.Module) -> list[str]:
    """Differences between a checkpoint ``state`` (keys ``model_config`` and ``model``) and a
    model: config fields (except ``WEIGHT_NEUTRAL_FIELDS``), missing/unexpected parameter names,
    shape mismatches. Empty if they match."""
    problems = []
    saved_config = state.get("model_config", {})
    config = dataclasses.asdict(model.config) if hasattr(model, "config") else {}
    for key in sorted((set(saved_config) | set(config)) - WEIGHT_NEUTRAL_FIELDS):
        if saved_config.get(key) != config.get(key):
            problems.append(
                f"config {key}: checkpoint {saved_config.get(key)!r}, model {config.get(key)!r}"
            )
    saved, current = state["model"], model.state_dict()
    problems += [f"missing in model: {k}" for k in sorted(saved.keys() - current.keys())]
    problems += [f"missing in checkpoint: {k}" for k in sorted(current.keys() - saved.keys())]
    for key in sorted(saved.keys() & current.keys()):
        if saved[key].shape != current[key].shape:
            problems.append(
                f"shape of {key}: checkpoint {tuple(saved[key].shape)}, "
                f"model {tuple(current[key].shape)}"
            )
    return problems


def load_weights(
    path: str | os.PathLike, model: nn.Module, map_location: str | torch.device = "cpu"
) -> dict:
    """Load the weights of checkpoint ``path`` into ``model``; returns the checkpoint state.

    Raises CheckpointError naming the file and listing every mismatch (config fields, parameter
    names, shapes) when the checkpoint was saved from a different model; ``model`` is untouched."""
    state = load_checkpoint(path, map_location)
    problems = compare_with_model(state, model)
    if problems:
        raise CheckpointError(
            f"{path} does not fit this model ({len(problems)} mismatches):\n  "
            + "\n  ".join(problems)
            + "\nbuild the model the checkpoint was saved from: vitlib.evaluate.load_model(path)"
        )
    model.load_state_dict(state["model"])
    return state
