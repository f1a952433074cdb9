"""Trained models shipped with vitlib: weights as ``.safetensors``, provenance beside them.

    vitlib.list_pretrained()                      # ['cpu-quick']
    model = vitlib.load_pretrained("cpu-quick")   # RelViT in eval mode, weights loaded
    model.pretrained_info["test_acc"]             # measured test accuracy (a fraction)

Each model is two files in ``vitlib/pretrained/``: ``NAME.safetensors`` (the ``state_dict``,
float32, read without pickle) and ``NAME.json`` (its provenance: the ``ModelConfig``, the
training preset and config, the command, hardware, torch version, date, wall time and the test
accuracy, one view and with flip TTA). The same JSON is stored in the safetensors header under
``"vitlib"``, so a copied weights file still knows what it is.

``bench/ship_pretrained.py`` writes them from a run of notebook 05;
``python -m vitlib.evaluate --pretrained NAME`` measures them again.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file

from .model import RelViT, create_model

HEADER_KEY = "vitlib"


def pretrained_dir() -> Path:
    """The folder of the shipped weights (inside the installed package)."""
    return Path(str(resources.files("vitlib") / "pretrained"))


def list_pretrained() -> list[str]:
    """Names of the shipped models, e.g. ``["cpu-quick"]``."""
    return sorted(path.stem for path in pretrained_dir().glob("*.safetensors"))


def pretrained_info(name: str) -> dict:
    """The provenance of a shipped model (``NAME.json``); refuses an unknown name."""
    known = list_pretrained()
    if name not in known:
        raise ValueError(f"unknown pretrained model {name!r}: choose one of {known}")
    return json.loads((pretrained_dir() / f"{name}.json").read_text())


def load_pretrained(name: str, device: str | torch.device = "cpu") -> RelViT:
    """The shipped model ``name`` in eval mode on ``device``, with ``model.pretrained_info``
    (its provenance, ``test_acc`` as a fraction)."""
    info = pretrained_info(name)
    model = create_model(info["model"], **info["model_config"])
    weights = load_file(pretrained_dir() / f"{name}.safetensors", device=str(device))
    model.load_state_dict(weights)
    model.pretrained_info = info
    return model.to(device).eval()
