"""The batched augmentation against torchvision, op by op, and its random statistics."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode, RandomErasing, TrivialAugmentWide

from vitlib import augment as A


def _reference_op(img: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    """What TrivialAugmentWide does to one uint8 (3, H, W) tensor (or PIL image) for
    (op, magnitude), written with torchvision's public functional API (nearest, default fill)."""
    nearest = InterpolationMode.NEAREST
    shear = math.degrees(math.atan(magnitude))
    calls = {
        "Identity": lambda: img,
        "ShearX": lambda: TF.affine(img, 0.0, [0, 0], 1.0, [shear, 0.0], nearest, center=[0, 0]),
        "ShearY": lambda: TF.affine(img, 0.0, [0, 0], 1.0, [0.0, shear], nearest, center=[0, 0]),
        "TranslateX": lambda: TF.affine(img, 0.0, [int(magnitude), 0], 1.0, [0.0, 0.0], nearest),
        "TranslateY": lambda: TF.affine(img, 0.0, [0, int(magnitude)], 1.0, [0.0, 0.0], nearest),
        "Rotate": lambda: TF.rotate(img, magnitude, nearest),
        "Brightness": lambda: TF.adjust_brightness(img, 1.0 + magnitude),
        "Color": lambda: TF.adjust_saturation(img, 1.0 + magnitude),
        "Contrast": lambda: TF.adjust_contrast(img, 1.0 + magnitude),
        "Sharpness": lambda: TF.adjust_sharpness(img, 1.0 + magnitude),
        "Posterize": lambda: TF.posterize(img, int(magnitude)),
        "Solarize": lambda: TF.solarize(img, magnitude),
        "AutoContrast": lambda: TF.autocontrast(img),
        "Equalize": lambda: TF.equalize(img),
    }
    return calls[name]()


def _test_images(n: int = 10) -> torch.Tensor:
    """uint8 (n + 2, 3, 32, 32): smooth random images with noise (natural-ish histograms), plus a
    constant image and a two-level image (the degenerate cases of autocontrast / equalize)."""
    g = torch.Generator().manual_seed(1)
    low = torch.rand(n, 3, 4, 4, generator=g) * 255
    smooth = torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False)
    noisy = (smooth + 20 * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 255).to(torch.uint8)
    flat = torch.full((1, 3, 32, 32), 77, dtype=torch.uint8)
    two = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    two[..., 16:] = 200
    return torch.cat([noisy, flat, two])


def _magnitudes(name: str) -> list[float]:
    """Several of the op's bins (first, middle, last...), with both signs where signed."""
    bins, signed = A.augmentation_space()[name]
    values = [float(v) for v in bins.reshape(-1)[[0, 7, 15, 22, 30] if bins.ndim else [0]]]
    return values + [-v for v in values if signed]


def test_augmentation_space_matches_torchvision():
    ours = A.augmentation_space()
    theirs = TrivialAugmentWide()._augmentation_space(A.NUM_BINS)
    assert tuple(theirs) == A.OPS == tuple(ours)
    for name in A.OPS:
        assert torch.equal(ours[name][0], theirs[name][0]), name
        assert ours[name][1] == theirs[name][1], name


@pytest.mark.parametrize("name", A.OPS)
def test_op_equals_torchvision_exactly(name):
    images = _test_images()
    for magnitude in _magnitudes(name):
        expected = torch.stack([_reference_op(img, name, magnitude) for img in images])
        got = A.OP_FUNCTIONS[name](
            images, torch.full((len(images),), magnitude, dtype=torch.float64)
        )
        assert got.dtype == torch.uint8
        assert torch.equal(got, expected), f"{name} magnitude {magnitude}"


@pytest.mark.parametrize("name", A.OPS)
def test_op_close_to_the_pil_path(name):
    """The reference run applied the ops to PIL images: same results up to rounding."""
    images = _test_images(6)
    for magnitude in _magnitudes(name)[::2]:
        pil = [TF.to_pil_image(img) for img in images]
        expected = torch.stack(
            [TF.pil_to_tensor(_reference_op(img, name, magnitude)) for img in pil]
        )
        got = A.OP_FUNCTIONS[name](
            images, torch.full((len(images),), magnitude, dtype=torch.float64)
        )
        diff = (got.int() - expected.int()).abs().double()
        assert diff.mean() < 1.0, f"{name} magnitude {magnitude}: mean |diff| {diff.mean():.2f}"


def test_ops_on_real_images_with_mixed_magnitudes(cifar_root):
    from vitlib.data import load_cifar10

    images, _ = load_cifar10(cifar_root, split="test", limit=256)
    op, magnitude = A.sample_trivial_augment(len(images), torch.Generator().manual_seed(3))
    got = A.apply_ops(images, op, magnitude)
    expected = torch.stack(
        [_reference_op(img, A.OPS[k], float(m)) for img, k, m in zip(images, op, magnitude)]
    )
    assert torch.equal(got, expected)
    assert set(op.tolist()) == set(range(len(A.OPS)))


def test_trivial_augment_sampling_is_uniform():
    n = 28_000
    op, magnitude = A.sample_trivial_augment(n, torch.Generator().manual_seed(0))
    counts = torch.bincount(op, minlength=len(A.OPS)).double()
    chi2 = ((counts - n / 14) ** 2 / (n / 14)).sum().item()
    assert chi2 < 40, counts  # 13 degrees of freedom: P(chi2 > 40) ~ 1e-4
    space = A.augmentation_space()
    for k, name in enumerate(A.OPS):
        bins, signed = space[name]
        m = magnitude[op == k]
        allowed = bins.double().reshape(-1)
        assert torch.isin(m.abs(), allowed).all(), name
        if signed:
            assert 0.45 < (m < 0).double().mean() < 0.55, name
            bin_counts = (m.abs()[:, None] == allowed[None, 1:]).double().sum(0)
            assert bin_counts.min() > 0.4 * bin_counts.mean(), name  # every bin is drawn
        else:
            assert (m >= 0).all(), name


def test_flip_crop_equals_torchvision():
    img = _test_images(1)[:1]
    combos = [(f, t, left) for f in (False, True) for t in range(9) for left in range(9)]
    flip, top, left = (torch.tensor(c) for c in zip(*combos))
    got = A.flip_crop(img.expand(len(combos), -1, -1, -1), flip, top, left)
    for k, (f, t, lft) in enumerate(combos):
        x = TF.hflip(img[0]) if f else img[0]
        assert torch.equal(got[k], TF.crop(TF.pad(x, 4), t, lft, 32, 32)), combos[k]


def test_flip_crop_sampling_statistics():
    flip, top, left = A.sample_flip_crop(9000, torch.Generator().manual_seed(0))
    assert 0.47 < flip.double().mean() < 0.53
    for offsets in (top, left):
        counts = torch.bincount(offsets, minlength=9)
        assert len(counts) == 9 and counts.min() > 850 and counts.max() < 1150


def test_erase_equals_torchvision():
    images = _test_images(3).float() / 255
    boxes = torch.tensor(
        [[0, 0, 5, 7], [10, 3, 20, 1], [31, 31, 1, 1], [4, 4, 0, 0], [0, 0, 31, 31]]
    )
    got = A.erase(images, boxes)
    for img, out, (i, j, h, w) in zip(images, got, boxes.tolist()):
        assert torch.equal(out, TF.erase(img, i, j, h, w, torch.tensor(0.0)))


def test_erasing_sampling_matches_torchvision():
    n = 20_000
    boxes = A.sample_erasing(n, 32, 32, torch.Generator().manual_seed(0), p=0.1)
    top, left, h, w = boxes.unbind(1)
    used = h > 0
    assert 0.09 < used.double().mean() < 0.11
    assert ((h < 32) & (w < 32)).all() and (top + h <= 32).all() and (left + w <= 32).all()
    area = (h * w)[used].double()
    assert area.min() >= 0.02 * 1024 * 0.8 and area.max() <= 0.33 * 1024 * 1.2
    always = A.sample_erasing(4000, 32, 32, torch.Generator().manual_seed(1), p=1.0)
    torch.manual_seed(0)
    ref = [
        RandomErasing.get_params(torch.zeros(3, 32, 32), (0.02, 0.33), (0.3, 3.3), [0.0])
        for _ in range(4000)
    ]
    ref_area = torch.tensor([float(b[2] * b[3]) for b in ref])
    ours_area = (always[:, 2] * always[:, 3]).double()
    assert (
        abs(ours_area.mean() - ref_area.mean()) < 6
    )  # mean ~180 px, std ~95: 4.5 sigma of the difference
    ref_tall = torch.tensor([float(b[2] > b[3]) for b in ref]).mean()
    assert abs((always[:, 2] > always[:, 3]).double().mean() - ref_tall) < 0.05


def test_train_augment_draws_everything_from_its_generator():
    # (dtype, range, replay and refused inputs: tests/reliability/test_properties.py)
    images = _test_images(30)
    out = A.TrainAugment()(images, torch.Generator().manual_seed(0))
    other = A.TrainAugment()(images, torch.Generator().manual_seed(1))
    torch.manual_seed(1)  # the global generator plays no part
    again = A.TrainAugment()(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and not torch.equal(out, other)
    assert out.device == images.device and not torch.equal(out, images.float() / 255)


def test_flip_crop_policy_is_flip_then_crop_only():
    images = _test_images(30)
    out = A.TrainAugment(policy="flip-crop")(images, torch.Generator().manual_seed(0))
    params = A.sample_flip_crop(len(images), torch.Generator().manual_seed(0))
    assert torch.equal(out, A.flip_crop(images, *params).float() / 255)
    with pytest.raises(ValueError, match="unknown augmentation policy 'light'"):
        A.TrainAugment(policy="light")


def test_none_policy_only_converts_to_float():
    images = _test_images(5)
    out = A.TrainAugment(policy="none")(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, images.float() / 255)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_augment_same_on_cuda():
    images = _test_images(62)
    cpu = A.TrainAugment()(images, torch.Generator().manual_seed(0))
    gpu = A.TrainAugment()(images.cuda(), torch.Generator().manual_seed(0))
    assert gpu.is_cuda
    assert (gpu.cpu() != cpu).float().mean() < 1e-3  # grid_sample ties may round differently


def _constant_batch(n: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i (3, size, size) is filled with the value i; label i == i."""
    labels = torch.arange(n)
    return labels.float().view(n, 1, 1, 1).expand(n, 3, size, size).clone(), labels


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_cutmix_lam_is_the_pasted_area(alpha):
    images, labels = _constant_batch(16)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        mixed, y, y_perm, lam = A.cutmix(images, labels, alpha, generator=g)
        assert torch.equal(y, labels) and sorted(y_perm.tolist()) == labels.tolist()
        assert 0.0 <= lam <= 1.0
        for i in range(16):
            pasted = mixed[i] != images[i]
            if y_perm[i] != y[i]:
                assert pasted.float().mean().item() == pytest.approx(1 - lam, abs=1e-6)
                assert (mixed[i][pasted] == float(y_perm[i])).all()
            assert (mixed[i][~pasted] == float(y[i])).all()
