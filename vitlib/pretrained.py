"""Trained models shipped with vitlib (``vitlib.load_pretrained("cpu-quick")``), two files each in
``vitlib/pretrained/``: ``NAME.safetensors``, the float32 ``state_dict`` (read without pickle), and
``NAME.json``, its provenance (docs/training.md), also in the safetensors header (``HEADER_KEY``)
so that a copied weights file still knows what it is."""

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
    if name not in (known := list_pretrained()):
        raise ValueError(f"unknown pretrained model {name!r}: choose one of {known}")
    return json.loads((pretrained_dir() / f"{name}.json").read_text())


def load_pretrained(name: str, device: str | torch.device = "cpu") -> RelViT:
    """The shipped model ``name`` in eval mode on ``device``, its .json as ``pretrained_info``."""
    info = pretrained_info(name)
    model = create_model(info["model"], **info["model_config"])
    model.load_state_dict(load_file(pretrained_dir() / f"{name}.safetensors", device=str(device)))
    model.pretrained_info = info
    return model.to(device).eval()
