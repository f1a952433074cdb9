"""Two variants of ``vit_cifar10_small`` that only notebook 07's ablations need: importing this
file registers them in vitlib's model registry (``vitlib.model.MODELS``), as ``resnet.py`` does
for ResNet-20, so that ``create_model``, ``train`` and ``load_model`` build them by name.

    vit_cifar10_small_circular_padding   every convolution pads circularly, not with zeros
    vit_cifar10_small_plain_init         every conv/linear weight trunc-normal, std 0.02
"""

from __future__ import annotations

import torch
from torch import nn

from vitlib.model import MODELS, RelViT


class CircularPaddingViT(RelViT):
    """The model with circular instead of zero padding in every convolution (stem and depthwise
    projections). Zero padding tells a convolution where the border is (Islam et al. 2020); with
    circular padding, no explicit position and a mean over tokens, the model's output does not
    change when the image is rolled by a whole token (4 pixels): it cannot know where it is."""

    def __init__(self, config):
        super().__init__(config)
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and any(module.padding):
                module.padding_mode = "circular"


class PlainInitViT(RelViT):
    """The model initialised like a plain ViT (timm): every conv and linear weight drawn from a
    truncated normal of std 0.02 instead of Kaiming's ``std = sqrt(2 / fan_in)``."""

    @torch.no_grad()
    def reset_parameters(self) -> None:
        super().reset_parameters()
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02)


SMALL = MODELS["vit_cifar10_small"][2]
MODELS["vit_cifar10_small_circular_padding"] = (CircularPaddingViT, MODELS["vit_cifar10_small"][1],
                                                SMALL)  # fmt: skip
MODELS["vit_cifar10_small_plain_init"] = (PlainInitViT, MODELS["vit_cifar10_small"][1], SMALL)
