"""``python -m vitlib.figures`` writes every README figure as a valid, small image."""

from __future__ import annotations

import torch
from PIL import Image

from vitlib import figures

EXPECTED = {
    "patch_grid.png": ("PNG", 1),
    "relative_index.png": ("PNG", 1),
    "attention_bias.png": ("PNG", 1),
    "vit.gif": ("GIF", 2),
}


def test_main_writes_every_figure(cifar_root, tmp_path):
    out = tmp_path / "Images"
    assert figures.main(["--out", str(out), "--datapath", str(cifar_root)]) == 0
    for name, (kind, min_frames) in EXPECTED.items():
        path = out / name
        assert path.is_file(), f"{name} was not written"
        assert path.stat().st_size < 2_000_000, f"{name} is {path.stat().st_size} bytes"
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == kind
            assert image.size[0] > 100 and image.size[1] > 100
            assert getattr(image, "n_frames", 1) >= min_frames


def test_query_bias_is_a_window_of_the_offset_table():
    table = torch.arange(31 * 31, dtype=torch.float32).view(31, 31)
    bias = figures.query_bias(table, query=(5, 9), grid=(16, 16))
    assert bias.shape == (16, 16)
    assert bias[5, 9] == table[15, 15]  # the query itself: zero offset, the table's centre
    assert bias[6, 11] == table[16, 17]  # one row down, two columns right


def test_exploded_keeps_every_patch():
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    canvas = figures.exploded(image, patch_size=2, gap=1.0)
    assert canvas.shape == (4 * 2 * 4 * 2 - 2 * 4, 4 * 2 * 4 * 2 - 2 * 4, 3)
    # top-left patch, each pixel drawn as a 4x4 block
    assert abs(canvas[0, 0] - image[:, 0, 0].float().numpy() / 255).max() < 1e-6
    assert abs(canvas[7, 7] - image[:, 1, 1].float().numpy() / 255).max() < 1e-6
