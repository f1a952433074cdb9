"""Images become sequences of patches, and back.

A ``(B, C, H, W)`` image cut into ``p x p`` patches is a grid of ``(H/p) x (W/p)`` patches;
read row by row it is a sequence of ``N = HW/p^2`` tokens, each holding ``p*p*C`` numbers.
On CIFAR-10 with ``p = 2`` that is ``16 x 16 = 256`` tokens of ``2*2*3 = 12`` values.

The model does not embed raw patches with a linear layer; its stem
(:class:`ConvStem`) first mixes each pixel with its 3x3 neighbourhood and then embeds every
``p x p`` patch with a convolution whose kernel and stride are both ``p``. Such a strided
convolution *is* a linear layer applied to each patch (``tests/test_patching.py`` proves it).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


def check_patch_size(image_size: int, patch_size: int) -> None:
    """Raise a clear ``ValueError`` unless ``patch_size`` divides ``image_size``."""
    if patch_size < 1 or image_size % patch_size != 0:
        raise ValueError(
            f"image size {image_size} is not divisible by patch size {patch_size}: "
            f"choose a patch size that divides {image_size} (e.g. 1, 2, 4, 8)"
        )


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into a row-major sequence of flattened patches.

    images: ``(B, C, H, W)`` -> patches: ``(B, N, p*p*C)`` with ``N = (H/p) * (W/p)``.
    Within a patch the values are ordered ``(row, column, channel)``.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
    for size in images.shape[-2:]:
        check_patch_size(size, patch_size)
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`.

    patches: ``(B, N, p*p*C)`` with ``N = grid[0] * grid[1]`` -> images ``(B, C, H, W)``.
    """
    height, width = grid
    if patches.ndim != 3 or patches.shape[1] != height * width:
        raise ValueError(
            f"expected patches of shape (B, {height * width}, p*p*C) for a {height}x{width} "
            f"grid, got {tuple(patches.shape)}"
        )
    return rearrange(
        patches,
        "b (h w) (p1 p2 c) -> b c (h p1) (w p2)",
        h=height,
        w=width,
        p1=patch_size,
        p2=patch_size,
    )


class ConvStem(nn.Module):
    """The patch-embedding stem of the reference model.

    ``(B, 3, H, W)`` -> 3x3 conv to ``stem_channels`` -> GELU -> ``p x p`` conv with stride
    ``p`` to ``dim`` -> ``(B, dim, H/p, W/p)``.
    """

    def __init__(self, in_channels: int, stem_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.conv = nn.Conv2d(in_channels, stem_channels, kernel_size=3, padding=1)
        self.act = nn.GELU()
        self.patch_embed = nn.Conv2d(stem_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(self.act(self.conv(images)))
