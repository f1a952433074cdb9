"""The trained model that ships with vitlib: its files, its provenance, its interface, and (on the
real data) that it still reaches the test accuracy recorded beside it."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from safetensors import safe_open

import vitlib
from vitlib.config import config_from_dict, preset_config
from vitlib.evaluate import main as evaluate_main
from vitlib.model import model_config
from vitlib.pretrained import HEADER_KEY, pretrained_dir, pretrained_info

NAME = "cpu-quick"
# TrainConfig fields that say where and how a run was watched, not what it computed.
RUN_LOCAL = {"out", "datapath", "device", "progress_bar", "resume", "checkpoint_every"}


def test_the_cpu_quick_model_ships():
    assert NAME in vitlib.list_pretrained()
    weights = pretrained_dir() / f"{NAME}.safetensors"
    assert weights.stat().st_size < 3_000_000, "float32 of 0.66M parameters is about 2.6 MB"


def test_load_pretrained_gives_an_eval_model_with_its_provenance():
    model = vitlib.load_pretrained(NAME)
    info = model.pretrained_info
    assert not model.training
    assert info["test_acc"] >= 0.80 and info["test_acc_tta"] >= info["test_acc"] - 0.005
    assert info["test_images"] == 10_000 and info["config"]["train_limit"] is None
    for key in ("command", "hardware", "torch", "date", "wall_seconds", "model_config"):
        assert info[key], key
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_shipped_model_agrees_with_its_preset():
    """A change to the cpu-quick preset or its model must come with re-trained weights
    (python bench/ship_pretrained.py)."""
    info = pretrained_info(NAME)
    preset = preset_config(info["preset"])
    # Fields added to TrainConfig after the weights were trained take their defaults.
    recorded = dataclasses.asdict(config_from_dict(info["config"]))
    trained = {k: v for k, v in recorded.items() if k not in RUN_LOCAL}
    expected = {k: v for k, v in dataclasses.asdict(preset).items() if k not in RUN_LOCAL}
    assert trained == expected
    # Fields added to ModelConfig after the weights were trained take their defaults too.
    assert model_config(info["model"], **info["model_config"]) == model_config(
        preset.model, **preset.model_overrides
    )


def test_weights_load_without_pickle_and_carry_their_provenance():
    path = pretrained_dir() / f"{NAME}.safetensors"
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()[HEADER_KEY])
        keys = set(f.keys())
    assert header == pretrained_info(NAME)
    assert keys == set(vitlib.load_pretrained(NAME).state_dict())


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown pretrained model 'cpu-slow': choose one of \["):
        vitlib.load_pretrained("cpu-slow")


@pytest.mark.slow
def test_shipped_weights_reach_their_recorded_accuracy(real_cifar_root, capsys):
    """The whole test set through the command line, in float32 as recorded: within 0.3 points."""
    assert evaluate_main(["--pretrained", NAME, "--datapath", str(real_cifar_root)]) == 0
    out = capsys.readouterr().out
    measured = float(re.search(r"test accuracy: ([\d.]+)%", out).group(1))
    recorded = 100 * pretrained_info(NAME)["test_acc"]
    assert "10,000 test images" in out
    assert abs(measured - recorded) <= 0.3, f"measured {measured:.2f}%, recorded {recorded:.2f}%"
