"""Images become sequences of patches, and back.

A ``(B, C, H, W)`` image cut into ``p x p`` patches is a grid of ``(H/p) x (W/p)`` patches;
read row by row it is a sequence of ``N = HW/p^2`` tokens of ``p*p*C`` numbers each (CIFAR-10,
``p = 2``: ``16 x 16 = 256`` tokens of ``2*2*3 = 12`` values). :class:`PatchStem` embeds them by a
convolution of kernel and stride ``p``, a linear layer per patch (``tests/test_patching.py``
proves it); :class:`StridedConvStem` reaches the same grid by stride-2 3x3 convolutions."""

import torch
from einops import rearrange
from torch import nn


def check_patch_size(image_size: int, patch_size: int) -> None:
    """Raise a clear ``ValueError`` unless ``patch_size`` divides ``image_size``."""
    if patch_size < 1 or image_size % patch_size != 0:
        raise ValueError(f"image size {image_size} is not divisible by patch size {patch_size}: "
                         f"choose a patch size that divides {image_size} (e.g. 1, 2, 4, 8)")


def check_power_of_two(patch_size: int) -> None:
    """Raise a ``ValueError`` unless ``patch_size`` is a power of two, as StridedConvStem needs."""
    if patch_size < 1 or patch_size & (patch_size - 1):
        raise ValueError("a strided convolutional stem halves the grid log2(patch_size) times: "
                         f"patch_size must be a power of two, got {patch_size} (use 1, 2, 4 or 8, "
                         "or the patch stem)")  # fmt: skip


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """images ``(B, C, H, W)`` -> row-major patches ``(B, N, p*p*C)``, ``N = (H/p) * (W/p)``,
    each flattened in ``(row, column, channel)`` order."""
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
    for size in images.shape[-2:]:
        check_patch_size(size, patch_size)
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`patchify`: ``(B, N, p*p*C)`` on ``grid = (H/p, W/p)`` -> ``(B, C, H, W)``."""
    height, width = grid
    if patches.ndim != 3 or patches.shape[1] != height * width:
        raise ValueError(f"expected patches of shape (B, {height * width}, p*p*C) for a "
                         f"{height}x{width} grid, got {tuple(patches.shape)}")  # fmt: skip
    pattern = "b (h w) (p1 p2 c) -> b c (h p1) (w p2)"
    return rearrange(patches, pattern, h=height, w=width, p1=patch_size, p2=patch_size)


class PatchStem(nn.Module):
    """The seed's stem (``stem="patch"``): ``(B, 3, H, W)`` -> 3x3 conv -> GELU -> ``p x p`` conv
    with stride ``p``, one embedding per patch -> ``(B, dim, H/p, W/p)``."""

    def __init__(self, in_channels: int, stem_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, stem_channels, kernel_size=3, padding=1)
        self.act = nn.GELU()
        self.patch_embed = nn.Conv2d(stem_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(self.act(self.conv(images)))


class StridedConvStem(nn.Module):
    """Overlapping stride-2 convolutions instead of one patch convolution (Xiao et al. 2021,
    "Early Convolutions Help Transformers See Better"), each with BatchNorm and GELU:
    ``(B, 3, H, W)`` -> 3x3 conv to ``stem_channels`` -> ``log2(p)`` times a 3x3 stride-2 conv
    doubling the channels -> 1x1 conv to ``dim`` -> ``(B, dim, H/p, W/p)``. With ``p = 4`` and 32
    stem channels: 32x32x32 -> 64x16x16 -> 128x8x8 -> dim x 8 x 8."""

    def __init__(self, in_channels: int, stem_channels: int, dim: int, patch_size: int):
        super().__init__()
        check_power_of_two(patch_size)
        widths = [stem_channels << i for i in range(patch_size.bit_length())]  # 32, 64, 128 (p=4)
        strides = [1] + [2] * (len(widths) - 1)
        layers: list[nn.Module] = []
        for c_in, c_out, stride in zip([in_channels, *widths], widths, strides):
            conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)
            layers += [conv, nn.BatchNorm2d(c_out), nn.GELU()]
        self.layers = nn.Sequential(*layers, nn.Conv2d(widths[-1], dim, kernel_size=1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)
