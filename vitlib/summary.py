"""How big is a model: parameters, FLOPs per image, and a readable table."""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .evaluate import eval_mode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (every one, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def flops_per_image(model: nn.Module, image_size: int = 32, in_channels: int = 3) -> int:
    """Forward FLOPs for one image, counted by ``torch.utils.flop_counter`` (a multiply-add is 2):
    the matrix products and convolutions (attention's two products included), not the elementwise
    work (softmax, bias adds, LayerNorm, GELU, residual adds, dropout). Autograd stays on: without
    it a CPU would run attention in its flash kernel, which the counter does not see."""
    device = next(model.parameters()).device
    image = torch.zeros(1, in_channels, image_size, image_size, device=device)
    with eval_mode(model, no_grad=False), FlopCounterMode(display=False) as counter:
        model(image)
    return counter.get_total_flops()


def summary(model: nn.Module, image_size: int = 32, in_channels: int = 3) -> str:
    """A table of the model's top-level parts: output shape and parameters for one image."""
    rows: list[tuple[str, str, int]] = []  # (part, its type and output shape, its parameters)

    def record(name: str, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        rows.append((name, type(module).__name__ + str(tuple(out.shape)), count_parameters(module)))

    device = next(model.parameters()).device
    with eval_mode(model), contextlib.ExitStack() as hooks:  # the hooks are removed on exit
        for name, child in _parts(model):
            hooks.enter_context(child.register_forward_hook(functools.partial(record, name)))
        model(torch.zeros(1, in_channels, image_size, image_size, device=device))
    own = sum(p.numel() for p in model.parameters(recurse=False))
    if own:  # parameters of the model itself, e.g. the position embedding
        rows.append(("(own parameters)", "", own))
    rows.append(("total", "", count_parameters(model)))
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'part':<{width}}  {'output (1 image)':<32}{'parameters':>12}"]
    lines += [f"{name:<{width}}  {shape:<32}{params:>12,}" for name, shape, params in rows]
    giga = flops_per_image(model, image_size, in_channels) / 1e9
    lines.append(f"forward FLOPs per image: {giga:.2f} G ({giga / 2:.2f} G multiply-adds)")
    return "\n".join(lines)


def _parts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level children, with a ``ModuleList`` opened into its items (``blocks.0``, ...)."""
    parts = []
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList):
            parts += [(f"{name}.{i}", item) for i, item in enumerate(child)]
        else:
            parts.append((name, child))
    return parts
