"""RelViT: the seed's Vision Transformer, its config, and the model registry (``MODELS``).

    image (B, 3, 32, 32), values in [0, 1]
      -> PatchStem: 3x3 conv, GELU, 2x2 stride-2 conv         (B, 256, 16, 16)
      -> + learned absolute position embedding                (B, 256, 16, 16)
      -> tokens                                               (B, 256 tokens, 256 channels)
      -> 8 x Block:  x = x + gamma_attn * Attention(LayerNorm(x))   (pre-LN)
                     x = x + gamma_mlp  * MLP(LayerNorm(x))   (scalar gammas, start at 0)
      -> LayerNorm, GELU, mean over tokens (no class token), dropout 0.3, Linear -> (B, 10)

Every LayerNorm normalises the channels of one token, as the seed's "channel LayerNorm" did."""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict

import torch
from einops import rearrange
from torch import nn

from .attention import SelfAttention2d, check_attention
from .patching import PatchStem, StridedConvStem, check_patch_size, check_power_of_two

STEMS = {"patch": PatchStem, "conv": StridedConvStem}
FIELD_CHECKS = {  # ModelConfig's checks: fields -> (test of each value, what the test asks for)
    "image_size in_channels stem_channels dim depth head_channels mlp_ratio num_classes":
        (lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
    "dropout head_dropout": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "relative_position absolute_position": (lambda v: isinstance(v, bool), "True or False"),
    "gain_init": (lambda v: isinstance(v, (int, float)) and math.isfinite(v), "a finite number"),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    image_size: int = 32
    patch_size: int = 2
    in_channels: int = 3
    stem: str = "patch"  # "patch" (PatchStem, the seed's) or "conv" (StridedConvStem)
    stem_channels: int = 32
    dim: int = 256  # token width (channels of the feature map)
    depth: int = 8  # number of blocks
    head_channels: int = 32  # channels per attention head: heads = dim // head_channels
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * dim
    num_classes: int = 10
    dropout: float = 0.0  # after each residual branch
    head_dropout: float = 0.3  # before the classifier
    attention: str = "fused"  # "fused" or "teaching": the same function on the same weights
    projection: str = "pointwise"  # "pointwise" (1x1, the seed) or "depthwise" (3x3 + 1x1)
    # Ablations (notebook 07): each ingredient can be switched off; the defaults are the model.
    relative_position: bool = True  # a learned relative position bias in every attention layer
    absolute_position: bool = True  # a learned position embedding added after the stem
    gain_init: float = 0.0  # initial value of the residual gains (ReZero: 0; 1 is a plain ViT)

    def __post_init__(self) -> None:
        check_patch_size(self.image_size, self.patch_size)
        for names, (ok, what) in FIELD_CHECKS.items():
            for name in names.split():
                if not ok(value := getattr(self, name)):
                    raise ValueError(f"{name} must be {what}, got {value!r}")
        check_attention(self.dim, self.head_channels, self.attention, self.projection)
        if self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}: choose one of {list(STEMS)}")
        if self.stem == "conv":
            check_power_of_two(self.patch_size)

    @property
    def grid(self) -> tuple[int, int]:
        return self.image_size // self.patch_size, self.image_size // self.patch_size  # (H/p, W/p)

    @property
    def heads(self) -> int:
        return self.dim // self.head_channels


class MLP(nn.Sequential):
    """Per-token MLP (seed: 1x1 convs): ``(B, N, C) -> (B, N, hidden) -> GELU -> (B, N, C)``."""

    def __init__(self, dim: int, hidden: int):
        layers = {"fc1": nn.Linear(dim, hidden), "act": nn.GELU(), "fc2": nn.Linear(hidden, dim)}
        super().__init__(OrderedDict(layers))


class Block(nn.Module):
    """Pre-LN branches ``x + gamma * f(LayerNorm(x))``, ``gamma`` a learned scalar from 0 (the block
    starts as the identity): ReZero's gain (https://arxiv.org/abs/2003.04887), LayerNorm kept."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim)
        self.attn = SelfAttention2d(config.dim, config.head_channels, config.grid, config.attention,
                                    config.projection, config.relative_position)  # fmt: skip
        self.norm2 = nn.LayerNorm(config.dim)
        self.mlp = MLP(config.dim, config.mlp_ratio * config.dim)
        self.dropout = nn.Dropout(config.dropout)
        self.gamma_attn, self.gamma_mlp = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: tokens ``(B, N, C)`` -> ``(B, N, C)``."""
        x = x + self.gamma_attn * self.dropout(self.attn(self.norm1(x)))
        x = x + self.gamma_mlp * self.dropout(self.mlp(self.norm2(x)))
        return x


class RelViT(nn.Module):
    """The seed's ViT: images ``(B, 3, H, W)`` in [0, 1] -> logits ``(B, classes)``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.stem = STEMS[config.stem](config.in_channels, config.stem_channels, config.dim,
                                       config.patch_size)  # fmt: skip
        shape = (config.dim, *config.grid)  # one learned vector per grid position
        self.pos_embedding = nn.Parameter(torch.zeros(shape)) if config.absolute_position else None
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm, self.act = nn.LayerNorm(config.dim), nn.GELU()  # after the last block
        self.head_dropout = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(config.dim, config.num_classes)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """RECIPE.md: Kaiming-normal (fan-in) conv/linear weights, zero biases, LayerNorm 1/0,
        position embedding and relative tables N(0, 0.02), residual gains 0 (``gain_init``)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
                module.reset_parameters()  # weight 1, bias 0 (and fresh BatchNorm statistics)
        if self.pos_embedding is not None:
            nn.init.normal_(self.pos_embedding, std=0.02)
        for block in self.blocks:
            if block.attn.rel_pos is not None:
                nn.init.normal_(block.attn.rel_pos.table, std=0.02)
            nn.init.constant_(block.gamma_attn, self.config.gain_init)
            nn.init.constant_(block.gamma_mlp, self.config.gain_init)

    def check_input(self, images: torch.Tensor) -> None:
        """A ``ValueError`` names the problem unless images are ``(B, C, S, S)`` as configured."""
        c, s, shape = self.config.in_channels, self.config.image_size, tuple(images.shape)
        if images.ndim != 4:
            got = f"got a {images.ndim}-D tensor of shape {shape}"
            fix = "add a batch dimension with images.unsqueeze(0)"
            raise ValueError(f"expected a batch of images (B, {c}, {s}, {s}), {got}; {fix}")
        if shape[1] != c:
            raise ValueError(f"expected {c} input channels, got {shape[1]} (shape {shape})")
        if shape[-2:] != (s, s):
            got = f"got {shape[-2]}x{shape[-1]}"
            fix = f"resize the images or create the model with image_size={shape[-1]}"
            raise ValueError(f"this model is built for {s}x{s} images, {got}; {fix}")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images ``(B, 3, H, W)`` -> tokens after the last block ``(B, N, C)``."""
        self.check_input(images)
        x = self.stem(images)  # (B, C, H/p, W/p)
        if self.pos_embedding is not None:
            x = x + self.pos_embedding
        x = rearrange(x, "b c h w -> b (h w) c")  # (B, N, C)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm(self.features(images)))  # (B, N, C)
        x = x.mean(dim=1)  # global average pool over tokens: (B, C)
        return self.head(self.head_dropout(x))  # (B, classes)

    def set_attention(self, form: str) -> RelViT:
        """Switch all attention layers to ``"fused"`` or ``"teaching"`` in place (same weights)."""
        self.config = dataclasses.replace(self.config, attention=form)  # checks the form
        for block in self.blocks:
            block.attn.form = form
        return self


# The model registry: name -> (model class, config class, keyword arguments of the config).
MODELS: dict[str, tuple[type[nn.Module], type, dict]] = {
    # The seed's model, trained to 96.80% by the reference run (RECIPE.md): 6,482,138 parameters.
    "vit_cifar10_patch2_input32": (RelViT, ModelConfig, {}),
    # Learns in minutes on a CPU: each change from the seed's won a short run (bench/RESULTS.md).
    "vit_cifar10_small": (RelViT, ModelConfig, {"patch_size": 4, "stem": "conv", "dim": 128,
        "depth": 4, "mlp_ratio": 2, "head_dropout": 0.0, "projection": "depthwise"}),
}  # fmt: skip


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(MODELS)


def model_config(name: str, **overrides) -> ModelConfig:
    """Model ``name``'s config with ``overrides`` of its fields; a ValueError names a bad one."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {list_models()}")
    _, config_class, defaults = MODELS[name]
    fields = {f.name for f in dataclasses.fields(config_class)}
    if unknown := sorted(set(overrides) - fields):
        raise ValueError(f"unknown model option(s) {unknown}: valid options are {sorted(fields)}")
    return config_class(**{**defaults, **overrides})


def create_model(name: str, **overrides) -> nn.Module:
    """A registered model, e.g. ``create_model("vit_cifar10_small", attention="teaching")``."""
    config = model_config(name, **overrides)  # checks the name first
    return MODELS[name][0](config)
