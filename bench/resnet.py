"""A small CNN to measure the Vision Transformer against: the CIFAR ResNet of He et al. 2016
("Deep Residual Learning for Image Recognition", section 4.2, https://arxiv.org/abs/1512.03385).

    image (B, 3, 32, 32), values in [0, 1]
      -> 3x3 conv to 16 channels, BatchNorm, ReLU              (B, 16, 32, 32)
      -> n BasicBlocks of 16 channels                          (B, 16, 32, 32)
      -> n BasicBlocks of 32 channels, the first with stride 2  (B, 32, 16, 16)
      -> n BasicBlocks of 64 channels, the first with stride 2  (B, 64, 8, 8)
      -> mean over positions, Linear -> logits                 (B, 10)

with ``depth = 6n + 2`` layers (ResNet-20: n = 3, 0.27M parameters). The blocks are torchvision's
``BasicBlock`` (two 3x3 convolutions with BatchNorm); where the shape changes, the shortcut is a
strided 1x1 convolution with BatchNorm (the paper's option B; its CIFAR models use option A,
zero-padding, which has no parameters).

Notebook 07's baseline, not part of vitlib: importing this file registers it in vitlib's model
registry as ``resnet20_cifar10``, so that ``vitlib.create_model``, ``vitlib.train.train`` and
``vitlib.evaluate.load_model`` build it by name from then on (bench/ablations.py imports it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from vitlib.model import MODELS


@dataclass(frozen=True)
class ResNetConfig:
    depth: int = 20  # 6n + 2 layers
    width: int = 16  # channels of the first stage; each later stage doubles them
    in_channels: int = 3
    num_classes: int = 10

    def __post_init__(self) -> None:
        for name in ("depth", "width", "in_channels", "num_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.depth % 6 != 2:
            raise ValueError(f"depth must be 6n + 2 (8, 14, 20, 32, ...), got {self.depth}")


def _stage(channels_in: int, channels: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` BasicBlocks; the first changes the channels and the stride."""
    shortcut = None
    if stride != 1 or channels_in != channels:
        shortcut = nn.Sequential(
            nn.Conv2d(channels_in, channels, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(channels),
        )
    layers = [BasicBlock(channels_in, channels, stride, shortcut)]
    layers += [BasicBlock(channels, channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """``forward``: ``(B, 3, 32, 32)`` in ``[0, 1]`` -> logits ``(B, classes)``."""

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = config
        n, w = (config.depth - 2) // 6, config.width
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, w, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.Sequential(
            _stage(w, w, n, 1), _stage(w, 2 * w, n, 2), _stage(2 * w, 4 * w, n, 2)
        )
        self.head = nn.Linear(4 * w, config.num_classes)
        for module in self.modules():  # He et al.: Kaiming-normal (fan-out) convolutions
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(images))  # (B, 4w, H/4, W/4)
        return self.head(x.mean(dim=(2, 3)))  # global average pool -> (B, classes)


MODELS["resnet20_cifar10"] = (ResNet, ResNetConfig, {"depth": 20})  # 0.27M parameters
