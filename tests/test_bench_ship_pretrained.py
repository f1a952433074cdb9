"""bench/ship_pretrained.py's export: the weights and provenance of a shipped model, written as
``vitlib.load_pretrained`` reads them."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import load_bench_module
from safetensors import safe_open

from vitlib.model import create_model
from vitlib.pretrained import HEADER_KEY

pytest.importorskip("papermill")  # ship_pretrained.py re-executes notebooks with it


def test_export_round_trip(tmp_path):
    export_pretrained = load_bench_module("ship_pretrained").export_pretrained
    model = create_model("vit_cifar10_small", depth=1, dim=32, head_channels=16).eval()
    info = {"name": "tiny", "model_config": dataclasses.asdict(model.config)}
    path = export_pretrained(model, info, tmp_path)
    assert json.loads((tmp_path / "tiny.json").read_text()) == info
    with safe_open(str(path), framework="pt") as f:
        loaded = {k: f.get_tensor(k) for k in f.keys()}
        assert json.loads(f.metadata()[HEADER_KEY]) == info
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    assert not list(tmp_path.glob(".*.tmp-*")), "written atomically, no temporary file left"
