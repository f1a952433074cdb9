"""Shared fixtures. CIFAR-10 is found through ``VITLIB_DATA`` (the folder that holds
``cifar-10-batches-py/``); tests that need it skip with a message saying so."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """The directory holding ``cifar-10-batches-py/``, or a clear skip."""
    root = os.environ.get("VITLIB_DATA")
    if not root:
        pytest.skip("needs CIFAR-10: set VITLIB_DATA to the folder holding cifar-10-batches-py/")
    path = Path(root).expanduser()
    if not (path / "cifar-10-batches-py").is_dir():
        pytest.skip(f"needs CIFAR-10: VITLIB_DATA={root} has no cifar-10-batches-py/ folder")
    return path


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
