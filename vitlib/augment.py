"""The RECIPE.md train augmentation, batched and vectorised on whatever device the images are on.

Per image, as in the reference run: TrivialAugmentWide -> RandomHorizontalFlip(0.5) ->
RandomCrop(32, padding=4) -> to float in [0, 1] -> RandomErasing(p=0.1, box filled with 0).
torchvision's transforms draw one op per call, for a whole batch; here the pixel work loops over
the 14 ops, never over images, each bit for bit torchvision's tensor functional on uint8 (nearest,
fill 0, blends truncated). The reference run's PIL images round blends (one grey level apart) and
rotate about 2% of the pixels differently (tests/test_augment.py bounds both). A CPU
``torch.Generator`` draws the randomness, so a seed gives the same augmentation on every device."""

import math
import random
import typing
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

NUM_BINS = 31  # TrivialAugmentWide's magnitude bins
PADDING = 4  # RandomCrop(32, padding=4)


def augmentation_space() -> dict[str, tuple[Tensor, bool]]:
    """TrivialAugmentWide's ops -> (magnitude bins, signed), exactly as torchvision defines them."""
    bins = partial(torch.linspace, steps=NUM_BINS)  # bins(first, last): NUM_BINS evenly spaced
    return {
        "Identity": (torch.tensor(0.0), False),
        "ShearX": (bins(0.0, 0.99), True), "ShearY": (bins(0.0, 0.99), True),
        "TranslateX": (bins(0.0, 32.0), True), "TranslateY": (bins(0.0, 32.0), True),
        "Rotate": (bins(0.0, 135.0), True),
        "Brightness": (bins(0.0, 0.99), True), "Color": (bins(0.0, 0.99), True),
        "Contrast": (bins(0.0, 0.99), True), "Sharpness": (bins(0.0, 0.99), True),
        "Posterize": (8 - (torch.arange(NUM_BINS) / ((NUM_BINS - 1) / 6)).round().int(), False),
        "Solarize": (bins(255.0, 0.0), False),
        "AutoContrast": (torch.tensor(0.0), False), "Equalize": (torch.tensor(0.0), False),
    }  # fmt: skip


OPS: tuple[str, ...] = tuple(augmentation_space())  # op k of sample_trivial_augment is OPS[k]


def _per_image(magnitude: float | Tensor, n: int) -> Tensor:
    """Magnitudes float64 (n,) on the CPU: parameters are computed in double, as torchvision's."""
    return torch.as_tensor(magnitude, dtype=torch.float64).cpu().expand(n)


def _affine(images: Tensor, corner: bool = False, **params: Tensor) -> Tensor:
    """torchvision's ``affine`` about the centre or top-left ``corner``; (n,) degrees, pixels."""
    (n, _, h, w), dev = images.shape, images.device
    zero = torch.zeros(n, dtype=torch.float64)
    rot, sx, sy = (torch.deg2rad(params.get(k, zero)) for k in ("angle", "shear_x", "shear_y"))
    tx, ty = params.get("tx", zero), params.get("ty", zero)
    cx, cy = (-0.5 * w, -0.5 * h) if corner else (0.0, 0.0)  # relative to the image centre
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    m2 = (d * (-cx - tx) - b * (-cy - ty)) + cx  # the matrix: [[d, -b, m2], [-c, a, m5]]
    m5 = (-c * (-cx - tx) + a * (-cy - ty)) + cy
    theta = torch.stack([d, -b, m2, -c, a, m5], dim=1).view(-1, 2, 3)  # float64 (n, 2, 3)
    # The grid, built elementwise in the rounding order of the CPU ``bmm`` (no TF32 matmul):
    xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, steps=w, device=dev).view(1, 1, w)
    ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, steps=h, device=dev).view(1, h, 1)
    rescaled = theta.to(dev, torch.float32) / torch.tensor([[0.5 * w], [0.5 * h]], device=dev)
    r = rescaled.view(n, 6, 1, 1).unbind(dim=1)
    gx = torch.addcmul(xs * r[0], ys, r[1]) + r[2]
    gy = torch.addcmul(xs * r[3], ys, r[4]) + r[5]
    grid = torch.stack([gx, gy], dim=-1)  # (n, H, W, 2); outside the image: zeros (the default)
    return F.grid_sample(images.float(), grid, mode="nearest", align_corners=False).to(torch.uint8)


def shear(images: Tensor, magnitude: float | Tensor, axis: str) -> Tensor:
    """Shear along ``axis`` ("x" or "y") by the factor ``magnitude`` about the top-left corner."""
    degrees = torch.rad2deg(torch.atan(_per_image(magnitude, len(images))))
    return _affine(images, corner=True, **{f"shear_{axis}": degrees})


def translate(images: Tensor, magnitude: float | Tensor, axis: str) -> Tensor:
    """Shift along ``axis`` ("x": right, "y": down) by ``int(magnitude)`` pixels (toward 0)."""
    return _affine(images, **{f"t{axis}": torch.trunc(_per_image(magnitude, len(images)))})


def rotate(images: Tensor, magnitude: float | Tensor) -> Tensor:
    """Rotate counter-clockwise by ``magnitude`` degrees about the centre. uint8 (n, C, H, W)."""
    return _affine(images, angle=-_per_image(magnitude, len(images)))


def _blend(images: Tensor, other: Tensor, magnitude: float | Tensor) -> Tensor:
    """torchvision's ``_blend``, f = 1 + magnitude: f * images + (1 - f) * other, to uint8."""
    factor = 1.0 + _per_image(magnitude, len(images))
    ratio, rest = (f.float().view(-1, 1, 1, 1).to(images.device) for f in (factor, 1.0 - factor))
    return (ratio * images + rest * other).clamp_(0, 255).to(torch.uint8)


def _grayscale(images: Tensor) -> Tensor:
    """ITU-R 601 luma truncated to uint8, as torchvision. (n, 3, H, W) -> (n, 1, H, W)."""
    r, g, b = images.unbind(dim=1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(torch.uint8).unsqueeze(1)


def brightness(images: Tensor, magnitude: float | Tensor) -> Tensor:
    """Scale brightness by ``1 + magnitude`` (blend with black). uint8 (n, C, H, W) -> same."""
    return _blend(images, torch.zeros_like(images), magnitude)


def color(images: Tensor, magnitude: float | Tensor) -> Tensor:
    """Scale saturation by ``1 + magnitude`` (blend with the grey image). uint8 (n, 3, H, W)."""
    return _blend(images, _grayscale(images), magnitude)


def contrast(images: Tensor, magnitude: float | Tensor) -> Tensor:
    """Scale contrast by ``1 + magnitude`` (blend with the mean grey level). uint8 (n, 3, H, W)."""
    return _blend(images, _grayscale(images).float().mean(dim=(1, 2, 3), keepdim=True), magnitude)


def sharpness(images: Tensor, magnitude: float | Tensor) -> Tensor:
    """Sharpen by ``1 + magnitude``: blend with a [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 blur."""
    c = images.shape[1]
    kernel = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], device=images.device) / 13
    smooth = F.conv2d(images.float(), kernel.expand(c, 1, 3, 3), groups=c).round_()
    degenerate = images.clone()
    degenerate[..., 1:-1, 1:-1] = smooth.to(torch.uint8)
    return _blend(images, degenerate, magnitude)


def posterize(images: Tensor, magnitude: float | Tensor) -> Tensor:
    """Keep the top ``int(magnitude)`` bits of every channel. uint8 (n, C, H, W) -> same."""
    bits = _per_image(magnitude, len(images)).long()
    mask = (256 - 2 ** (8 - bits)).to(device=images.device, dtype=torch.uint8)
    return images & mask.view(-1, 1, 1, 1)


def solarize(images: Tensor, magnitude: float | Tensor) -> Tensor:
    """Invert every value >= ``magnitude`` (a threshold in 0..255). uint8 (n, C, H, W)."""
    threshold = _per_image(magnitude, len(images)).float().view(-1, 1, 1, 1)
    return torch.where(images >= threshold.to(images.device), 255 - images, images)


def autocontrast(images: Tensor, magnitude: float | Tensor = 0.0) -> Tensor:
    """Stretch each channel to 0..255 (``magnitude`` ignored). uint8 (n, C, H, W) -> same."""
    lo, hi = (extreme(dim=(-2, -1), keepdim=True).float() for extreme in (images.amin, images.amax))
    flat = hi == lo  # a constant channel stays as it is
    scale = torch.where(flat, 1.0, 255.0 / (hi - lo))
    return ((images - torch.where(flat, 0.0, lo)) * scale).clamp_(0, 255).to(torch.uint8)


def equalize(images: Tensor, magnitude: float | Tensor = 0.0) -> Tensor:
    """Histogram-equalise each channel by torchvision's LUT rule (``magnitude`` ignored). uint8."""
    flat = images.flatten(2).long()  # (n, C, H*W)
    hist = flat.new_zeros(*flat.shape[:2], 256).scatter_add_(2, flat, torch.ones_like(flat))
    top_count = hist.gather(2, flat.amax(dim=2, keepdim=True))
    step = (flat.shape[2] - top_count) // 255  # (n, C, 1): all pixels but the brightest's, / 255
    lut = (hist.cumsum(2) + step // 2) // step.clamp(min=1)
    lut = F.pad(lut, (1, 0))[..., :-1].clamp(0, 255)
    return torch.where(step == 0, flat, lut.gather(2, flat)).to(torch.uint8).view_as(images)


OP_FUNCTIONS = {  # name in OPS -> op(images uint8 (n, C, H, W), magnitude) -> same
    "Identity": lambda images, magnitude: images,
    "ShearX": partial(shear, axis="x"), "ShearY": partial(shear, axis="y"),
    "TranslateX": partial(translate, axis="x"), "TranslateY": partial(translate, axis="y"),
    "Rotate": rotate, "Brightness": brightness, "Color": color, "Contrast": contrast,
    "Sharpness": sharpness, "Posterize": posterize, "Solarize": solarize,
    "AutoContrast": autocontrast, "Equalize": equalize,
}  # fmt: skip


def sample_trivial_augment(n: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Per image, as ``TrivialAugmentWide.forward``: an op uniform over ``OPS``, one of its 31 bins,
    a random sign if signed -> (op int64 (n,), magnitude float64 (n,)), on the CPU."""
    values, signed = zip(*augmentation_space().values())
    table = torch.stack([v.double().expand(NUM_BINS) for v in values])  # (14 ops, 31 bins)
    op = torch.randint(len(OPS), (n,), generator=generator)
    bins = torch.randint(NUM_BINS, (n,), generator=generator)
    negative = torch.randint(2, (n,), generator=generator).bool() & torch.tensor(signed)[op]
    magnitude = table[op, bins]
    return op, torch.where(negative, -magnitude, magnitude)


def apply_ops(images: Tensor, op: Tensor, magnitude: Tensor) -> Tensor:
    """Op ``OPS[op[i]]`` with ``magnitude[i]`` on image i, each op run once on its images' slice.
    images uint8 (n, C, H, W); op int64 (n,); magnitude float64 (n,) -> uint8 (n, C, H, W)."""
    op, magnitude = op.cpu(), magnitude.cpu()
    order = torch.argsort(op, stable=True)
    counts = torch.bincount(op, minlength=len(OPS)).tolist()
    runs = zip(OPS, images[order.to(images.device)].split(counts), magnitude[order].split(counts))
    out = torch.cat([OP_FUNCTIONS[name](x, m) for name, x, m in runs if len(x)])
    return out[torch.argsort(order).to(images.device)]


def sample_flip_crop(n: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """Per image, on the CPU: flip bool (n,) (p 0.5), crop top, left int64 (n,) in 0..2*PADDING."""
    flip = torch.rand(n, generator=generator) < 0.5
    top, left = torch.randint(2 * PADDING + 1, (2, n), generator=generator)
    return flip, top, left


def flip_crop(images: Tensor, flip: Tensor, top: Tensor, left: Tensor) -> Tensor:
    """``RandomHorizontalFlip`` where ``flip``, then ``RandomCrop(size, PADDING)`` at (top, left),
    in one gather. images (n, C, H, W) any dtype; flip bool (n,); top, left int64 (n,)."""
    (n, c, h, w), dev = images.shape, images.device
    pw = w + 2 * PADDING  # the padded width
    rows = top.to(dev)[:, None] + torch.arange(h, device=dev)
    cols = left.to(dev)[:, None] + torch.arange(w, device=dev)
    cols = torch.where(flip.to(dev)[:, None], pw - 1 - cols, cols)  # pad(flip(x)) == flip(pad(x))
    index = (rows[:, :, None] * pw + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return F.pad(images, (PADDING,) * 4).view(n, c, -1).gather(2, index).view(n, c, h, w)


def sample_erasing(n: int, height: int, width: int, generator: torch.Generator | None,
                   p: float = 0.1) -> Tensor:  # fmt: skip
    """RandomErasing boxes as torchvision draws them: with probability p, up to 10 tries of area
    ~ U(0.02, 0.33) * H * W and log aspect ~ U(log 0.3, log 3.3); the first box that fits is used.
    Returns int64 (n, 4) = (top, left, h, w) on the CPU; h = w = 0 where nothing is erased."""
    apply = torch.rand(n, generator=generator) < p
    area = height * width * torch.empty(n, 10).uniform_(0.02, 0.33, generator=generator).double()
    log_ratio = torch.empty(n, 10).uniform_(math.log(0.3), math.log(3.3), generator=generator)
    aspect = torch.exp(log_ratio).double()
    h = torch.sqrt(area * aspect).round().long()
    w = torch.sqrt(area / aspect).round().long()
    fits = (h < height) & (w < width)
    first = fits.long().argmax(dim=1, keepdim=True)  # index of the first fitting try
    use = apply & fits.any(dim=1)
    h, w = (torch.where(use, side.gather(1, first).squeeze(1), 0) for side in (h, w))
    top = (torch.rand(n, generator=generator) * (height - h + 1)).long()
    left = (torch.rand(n, generator=generator) * (width - w + 1)).long()
    return torch.stack([top, left, h, w], dim=1)


def erase(images: Tensor, boxes: Tensor) -> Tensor:
    """Zero box (top, left, h, w) of image i. images (n, C, H, W); boxes int64 (n, 4)."""
    top, left, bh, bw = boxes.to(images.device).view(-1, 4, 1, 1).unbind(dim=1)  # (n, 1, 1) each
    rows = torch.arange(images.shape[-2], device=images.device)[:, None]  # (H, 1)
    cols = torch.arange(images.shape[-1], device=images.device)  # (W,)
    inside = (rows >= top) & (rows < top + bh) & (cols >= left) & (cols < left + bw)  # (n, H, W)
    return images.masked_fill(inside.unsqueeze(1), 0.0)


# "recipe": RECIPE.md's; "flip-crop": only its flip and padded crop (short runs); "none": neither.
Policy = typing.Literal["recipe", "flip-crop", "none"]  # train augmentations: TrainConfig.augment
POLICIES: tuple[str, ...] = typing.get_args(Policy)


def check_policy(policy: str) -> None:
    """The one check of a policy name: a ``ValueError`` naming ``POLICIES`` unless among them."""
    if policy not in POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}: choose one of {POLICIES}")


class TrainAugment(torch.nn.Module):
    """The train augmentation of ``policy`` (one of ``POLICIES``), per image on the batch's device:
    uint8 (B, C, H, W) -> float32 (B, C, H, W) in [0, 1], random draws from a CPU ``generator``;
    ``flips=False`` (digits): no mirror images, the same draws otherwise."""

    def __init__(self, policy: str = "recipe", flips: bool = True) -> None:
        super().__init__()
        check_policy(policy)
        self.policy, self.flips = policy, flips

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            found = f"{images.dtype} {tuple(images.shape)}"
            raise TypeError(f"TrainAugment expects uint8 (B, C, H, W) images, got {found}")
        if self.policy == "none":
            return images.float().div_(255)
        n, _, h, w = images.shape
        recipe = self.policy == "recipe"
        x = apply_ops(images, *sample_trivial_augment(n, generator)) if recipe else images
        flip, top, left = sample_flip_crop(n, generator)
        x = flip_crop(x, flip & self.flips, top, left).float().div_(255)
        return erase(x, sample_erasing(n, h, w, generator)) if recipe else x


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """One Beta(alpha, alpha) draw, seeded from ``generator`` so that it replays."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return random.Random(seed).betavariate(alpha, alpha)


def cutmix(
    images: Tensor, labels: Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor, float]:
    """CutMix: paste one box from a shuffled copy of the batch into every image.

    The box side ratio is sqrt(1 - lam0) with lam0 ~ Beta(alpha, alpha) and a uniform centre,
    clipped to the image; lam is then corrected to the exact kept area: 1 - box_area / (H * W).
    images (B, C, H, W); labels (B,) -> (mixed (B, C, H, W), labels, labels[perm], lam), so the
    loss is ``lam * CE(out, labels) + (1 - lam) * CE(out, labels[perm])``."""
    n, _, h, w = images.shape
    lam0 = _beta(alpha, generator)
    perm = torch.randperm(n, generator=generator).to(images.device)
    cut = math.sqrt(1.0 - lam0)
    cut_h, cut_w = int(h * cut), int(w * cut)
    cy = int(torch.randint(h, (1,), generator=generator))
    cx = int(torch.randint(w, (1,), generator=generator))
    y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    mixed = images.clone()
    mixed[:, :, y1:y2, x1:x2] = images[perm, :, y1:y2, x1:x2]
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
    return mixed, labels, labels[perm], lam
