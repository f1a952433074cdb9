import pytest
import torch
import torch.nn.functional as F

from vitlib.patching import PatchStem, StridedConvStem, patchify, unpatchify


@pytest.mark.parametrize("patch_size", [1, 2, 4, 8])
def test_patchify_unpatchify_round_trip(patch_size):
    images = torch.rand(3, 3, 32, 32)
    patches = patchify(images, patch_size)
    grid = 32 // patch_size
    assert patches.shape == (3, grid * grid, patch_size * patch_size * 3)
    assert torch.equal(unpatchify(patches, patch_size, (grid, grid)), images)


def test_patches_are_read_row_major():
    images = torch.arange(16.0).view(1, 1, 4, 4)
    patches = patchify(images, 2)  # (1, 4, 4): top-left, top-right, bottom-left, bottom-right
    assert patches[0, 0].tolist() == [0, 1, 4, 5]
    assert patches[0, 1].tolist() == [2, 3, 6, 7]
    assert patches[0, 2].tolist() == [8, 9, 12, 13]


def test_strided_convolution_is_a_linear_layer_on_patches():
    stem = PatchStem(3, 32, 64, patch_size=2)
    features = torch.rand(2, 32, 32, 32)
    by_conv = stem.patch_embed(features)  # (2, 64, 16, 16)
    weight = stem.patch_embed.weight.permute(0, 2, 3, 1).flatten(
        1
    )  # (64, p*p*C), (row, col, channel)
    by_linear = F.linear(patchify(features, 2), weight, stem.patch_embed.bias)  # (2, 256, 64)
    assert torch.allclose(by_conv.flatten(2).transpose(1, 2), by_linear, atol=1e-5)


def test_stem_output_shape():
    assert PatchStem(3, 32, 256, 2)(torch.rand(2, 3, 32, 32)).shape == (2, 256, 16, 16)


@pytest.mark.parametrize("patch_size", [1, 2, 4, 8])
def test_strided_stem_halves_the_grid_log2_p_times(patch_size):
    stem = StridedConvStem(3, 16, 48, patch_size)
    strides = [m.stride[0] for m in stem.modules() if isinstance(m, torch.nn.Conv2d)]
    assert strides == [1] + [2] * (patch_size.bit_length() - 1) + [1]  # 3x3 convs, then 1x1
    out = stem(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 48, 32 // patch_size, 32 // patch_size)


def test_strided_stem_needs_a_power_of_two():
    with pytest.raises(ValueError, match="must be a power of two, got 6"):
        StridedConvStem(3, 16, 48, patch_size=6)


def test_patch_size_must_divide_image_size():
    with pytest.raises(ValueError, match="not divisible by patch size 3"):
        patchify(torch.rand(1, 3, 32, 32), 3)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, C, H, W\)"):
        patchify(torch.rand(3, 32, 32), 2)
