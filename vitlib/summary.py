"""How big is a model: parameters, FLOPs per image, and a readable table."""

import contextlib
import functools

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .evaluate import eval_mode


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_image(model: nn.Module) -> int:
    """Forward FLOPs per image by ``torch.utils.flop_counter`` (a multiply-add is 2): the matrix
    products and convolutions, attention's included, not the elementwise work (softmax, LayerNorm,
    GELU, adds). Autograd stays on, else CPU attention runs an uncounted flash kernel."""
    with eval_mode(model, no_grad=False), FlopCounterMode(display=False) as counter:
        size = getattr(getattr(model, "config", None), "image_size", 32)
        model(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    return counter.get_total_flops()


def summary(model: nn.Module) -> str:
    """A table of the top-level parts (``blocks.0``, ...): output shape, parameters (one image)."""
    rows: list[tuple[str, str, int]] = []  # (part, its type and output shape, its parameters)

    def record(name: str, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        rows.append((name, type(module).__name__ + str(tuple(out.shape)), count_parameters(module)))

    with contextlib.ExitStack() as hooks:  # the hooks are removed on exit
        for name, child in model.named_children():
            opened = isinstance(child, nn.ModuleList)
            for i, part in enumerate(child) if opened else [(None, child)]:
                hook = functools.partial(record, name if i is None else f"{name}.{i}")
                hooks.enter_context(part.register_forward_hook(hook))
        giga = flops_per_image(model) / 1e9  # its forward pass fills the rows
    own = sum(p.numel() for p in model.parameters(recurse=False))
    if own:  # parameters of the model itself, e.g. the position embedding
        rows.append(("(own parameters)", "", own))
    rows.append(("total", "", count_parameters(model)))
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'part':<{width}}  {'output (1 image)':<32}{'parameters':>12}"]
    lines += [f"{name:<{width}}  {shape:<32}{params:>12,}" for name, shape, params in rows]
    lines.append(f"forward FLOPs per image: {giga:.2f} G ({giga / 2:.2f} G multiply-adds)")
    return "\n".join(lines)
