"""Property-based tests: every valid model configuration builds and maps (B, 3, S, S) images to
(B, classes) logits; invalid ones raise the documented ValueError; every TrivialAugmentWide op
keeps uint8 (n, C, H, W) images uint8 of the same shape for any magnitude in its range."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitlib import augment
from vitlib.model import ModelConfig, RelViT, create_model

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def valid_configs(draw):
    patch = draw(st.sampled_from([1, 2, 4, 8]))
    head_channels = draw(st.sampled_from([4, 8]))
    return ModelConfig(
        image_size=patch * draw(st.integers(1, 4)),
        patch_size=patch,
        stem_channels=draw(st.integers(1, 8)),
        dim=head_channels * draw(st.integers(1, 3)),
        depth=draw(st.integers(1, 2)),
        head_channels=head_channels,
        mlp_ratio=draw(st.integers(1, 3)),
        num_classes=draw(st.integers(1, 12)),
        dropout=draw(st.floats(0, 0.9)),
        head_dropout=draw(st.floats(0, 0.9)),
        attention=draw(st.sampled_from(["fused", "teaching"])),
        projection=draw(st.sampled_from(["pointwise", "depthwise"])),
    )


@SETTINGS
@given(config=valid_configs(), batch=st.integers(1, 3))
def test_valid_model_configs_build_and_run(config, batch):
    model = RelViT(config).eval()
    images = torch.rand(batch, 3, config.image_size, config.image_size)
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (batch, config.num_classes)
    assert torch.isfinite(logits).all()


@SETTINGS
@given(
    field=st.sampled_from(["image_size", "stem_channels", "dim", "depth", "mlp_ratio",
                           "num_classes", "head_channels"]),
    value=st.integers(-5, 0),
)  # fmt: skip
def test_non_positive_sizes_are_refused(field, value):
    with pytest.raises(ValueError, match=rf"{field}|patch size"):
        create_model("vit_cifar10_small", **{field: value})


@SETTINGS
@given(image_size=st.integers(1, 40), patch_size=st.integers(-2, 40))
def test_patch_size_must_divide_image_size(image_size, patch_size):
    if patch_size >= 1 and image_size % patch_size == 0:
        config = ModelConfig(image_size=image_size, patch_size=patch_size, dim=8, head_channels=8)
        assert config.grid == (image_size // patch_size, image_size // patch_size)
    else:
        with pytest.raises(ValueError, match=f"not divisible by patch size {patch_size}"):
            ModelConfig(image_size=image_size, patch_size=patch_size)


@SETTINGS
@given(dim=st.integers(1, 64), head_channels=st.integers(1, 64))
def test_heads_must_divide_dim(dim, head_channels):
    if dim % head_channels == 0:
        assert ModelConfig(dim=dim, head_channels=head_channels).heads == dim // head_channels
    else:
        with pytest.raises(ValueError, match=f"not divisible by head_channels={head_channels}"):
            ModelConfig(dim=dim, head_channels=head_channels)


@SETTINGS
@given(name=st.sampled_from(["dropout", "head_dropout"]), value=st.floats(allow_nan=False))
def test_dropout_range(name, value):
    if 0 <= value < 1:
        assert getattr(ModelConfig(**{name: value}), name) == value
    else:
        with pytest.raises(ValueError, match=rf"{name} must be in \[0, 1\)"):
            ModelConfig(**{name: value})


@SETTINGS
@given(name=st.text(min_size=1, max_size=12))
def test_unknown_attention_or_projection(name):
    for field, allowed in (("attention", {"fused", "teaching"}),
                           ("projection", {"pointwise", "depthwise"})):  # fmt: skip
        if name not in allowed:
            with pytest.raises(ValueError, match=f"unknown {field}"):
                ModelConfig(**{field: name})


# Magnitude ranges of TrivialAugmentWide (augmentation_space): signed ops take -max..max.
RANGES = {name: float(bins.max()) for name, (bins, _) in augment.augmentation_space().items()}
SIGNED = {name for name, (_, signed) in augment.augmentation_space().items() if signed}


@st.composite
def op_and_magnitude(draw):
    name = draw(st.sampled_from(augment.OPS))
    top = RANGES[name]
    low = -top if name in SIGNED else (1.0 if name == "Posterize" else 0.0)
    return name, draw(st.floats(low, top, allow_nan=False))


@SETTINGS
@given(
    op=op_and_magnitude(),
    n=st.integers(1, 3),
    size=st.integers(4, 12),
    seed=st.integers(0, 2**16),
)
def test_every_op_keeps_uint8_shape_for_in_range_magnitudes(op, n, size, seed):
    name, magnitude = op
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    out = augment.OP_FUNCTIONS[name](images, magnitude)
    assert out.dtype == torch.uint8 and out.shape == images.shape


@SETTINGS
@given(n=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_zero_magnitude_colour_ops_are_the_identity(n, seed):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    for name in ("Brightness", "Color", "Contrast", "Sharpness", "ShearX", "TranslateY"):
        assert torch.equal(augment.OP_FUNCTIONS[name](images, 0.0), images), name
    assert torch.equal(augment.solarize(images, 256.0), images)
    assert torch.equal(augment.posterize(images, 8), images)


@SETTINGS
@given(n=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_train_augment_output_range_and_replay(n, seed):
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    first = augment.TrainAugment()(images, torch.Generator().manual_seed(seed))
    again = augment.TrainAugment()(images, torch.Generator().manual_seed(seed))
    assert first.dtype == torch.float32 and first.shape == images.shape
    assert 0 <= first.min() and first.max() <= 1 and torch.equal(first, again)


@SETTINGS
@given(dtype=st.sampled_from([torch.float32, torch.int64, torch.uint8]), ndim=st.integers(1, 5))
def test_train_augment_refuses_other_inputs(dtype, ndim):
    if dtype == torch.uint8 and ndim == 4:  # the one accepted input
        images = torch.zeros((2, 3, 8, 8), dtype=dtype)
        assert augment.TrainAugment()(images).shape == images.shape
        return
    images = torch.zeros((2,) * ndim, dtype=dtype)
    with pytest.raises(TypeError, match="TrainAugment expects uint8 \\(B, C, H, W\\)"):
        augment.TrainAugment()(images)
