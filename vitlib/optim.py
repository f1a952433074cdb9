"""AdamW (or SGD, a CNN's) with the seed's weight-decay rule: only the ``.weight`` of ``nn.Conv2d``
and ``nn.Linear`` decays, not biases, LayerNorm, residual gains, position embeddings or tables.
AdamW decouples the decay (notebook 04): PyTorch's ``weight_decay`` is the paper's lambda/alpha."""

import torch
from torch import nn


def decay_parameter_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """Trainable parameter names split into (decay, no_decay). A parameter shared by several
    modules is listed once and decays if any Conv2d/Linear holds it as ``weight``."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    decay_ids = {id(layer.weight) for layer in layers if layer.weight is not None}
    decay, no_decay = [], []
    for name, param in model.named_parameters():  # deduplicates shared parameters
        if param.requires_grad:
            (decay if id(param) in decay_ids else no_decay).append(name)
    return decay, no_decay


def create_optimizer(model: nn.Module, *, kind: str = "adamw", lr: float,
                     betas: tuple[float, float], eps: float,
                     weight_decay: float) -> torch.optim.Optimizer:  # fmt: skip
    """``kind`` "adamw" (fused kernel on CUDA) or "sgd" (momentum 0.9, the decay added to the
    gradient: He et al.'s CIFAR recipe) over two groups (``weight_decay`` and 0)."""
    params = dict(model.named_parameters())
    decay, no_decay = decay_parameter_names(model)
    groups = [{"params": [params[n] for n in decay], "weight_decay": weight_decay},
              {"params": [params[n] for n in no_decay], "weight_decay": 0.0}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
