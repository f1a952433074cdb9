"""Weight-decay groups on the real model: only Conv2d/Linear ``.weight`` decays."""

import torch

import vitlib
from vitlib.optim import create_optimizer, decay_parameter_names


def test_decay_groups_on_the_reference_model():
    model = vitlib.create_model("vit_cifar10_patch2_input32")
    decay, no_decay = decay_parameter_names(model)
    conv_linear = {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))
    }
    assert set(decay) == conv_linear
    # 2 stem convs + per block (q, k, v, out, fc1, fc2) + the head
    assert len(decay) == 2 + 8 * 6 + 1
    assert sum(n.startswith("stem.") for n in decay) == 2
    assert "head.weight" in decay and "head.bias" in no_decay
    assert "pos_embedding" in no_decay
    for i in range(8):
        for name in ("gamma_attn", "gamma_mlp", "norm1.weight", "norm2.bias", "attn.rel_pos.table"):
            assert f"blocks.{i}.{name}" in no_decay
    kinds = (".bias", "norm", "gamma", "rel_pos", "pos_embedding")
    assert all(any(k in n for k in kinds) for n in no_decay)
    assert len(decay) + len(no_decay) == len(list(model.parameters()))


def test_batchnorm_of_the_small_model_does_not_decay():
    model = vitlib.create_model("vit_cifar10_small")
    decay, no_decay = decay_parameter_names(model)
    batchnorm = [
        f"{name}.{param}"
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.BatchNorm2d)
        for param in ("weight", "bias")
    ]
    assert len(batchnorm) == 6 and set(batchnorm) <= set(no_decay)
    assert sum(n.startswith("stem.") for n in decay) == 4  # three 3x3 convs and the 1x1


def test_optimizer_groups_and_hyperparameters():
    model = vitlib.create_model("vit_cifar10_small", depth=1)
    opt = create_optimizer(model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in decay["params"]}
    assert ids == {
        id(m.weight) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    }
    assert decay["lr"] == 1e-3 and decay["betas"] == (0.9, 0.999) and decay["eps"] == 1e-8
    assert not decay["fused"]  # CPU model


def test_shared_parameter_is_listed_once():
    lin = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(lin, torch.nn.ReLU(), lin)
    decay, no_decay = decay_parameter_names(model)
    assert decay == ["0.weight"] and no_decay == ["0.bias"]


def test_frozen_parameters_are_left_out():
    model = vitlib.create_model("vit_cifar10_small", depth=1)
    model.head.weight.requires_grad_(False)
    decay, _ = decay_parameter_names(model)
    assert "head.weight" not in decay
