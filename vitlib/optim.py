"""AdamW with the seed's weight-decay rule: only the ``.weight`` of ``nn.Conv2d`` and ``nn.Linear``
decays; biases, LayerNorm, residual gains, position embeddings and relative tables do not.

AdamW (Loshchilov & Hutter 2019, https://arxiv.org/abs/1711.05101) *decouples* the decay from
the gradient: it shrinks the weights directly instead of adding ``wd * p`` to the gradient, which
Adam's division by ``sqrt(v_hat)`` would rescale per parameter. ``torch.optim.AdamW`` shrinks by
``lr * wd * p`` (following the schedule); the paper by ``eta_t * lambda``, independently of the
step size ``alpha``, so PyTorch's ``weight_decay`` is the paper's ``lambda / alpha``.
"""

import torch
from torch import nn


def decay_parameter_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """Trainable parameter names split into (decay, no_decay). A parameter shared by several
    modules is listed once and decays if any Conv2d/Linear holds it as ``weight``."""
    decay_ids = {
        id(module.weight)
        for module in model.modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.weight is not None
    }
    decay, no_decay = [], []
    for name, param in model.named_parameters():  # deduplicates shared parameters
        if param.requires_grad:
            (decay if id(param) in decay_ids else no_decay).append(name)
    return decay, no_decay


def create_optimizer(
    model: nn.Module,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> torch.optim.AdamW:
    """AdamW over two groups (``weight_decay`` and 0); fused kernel when the model is on CUDA."""
    params = dict(model.named_parameters())
    decay, no_decay = decay_parameter_names(model)
    groups = [
        {"params": [params[n] for n in decay], "weight_decay": weight_decay},
        {"params": [params[n] for n in no_decay], "weight_decay": 0.0},
    ]
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
