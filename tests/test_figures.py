"""vitlib.plots and the README's figures: ``python bench/figures.py --out DIR`` writes every README
figure as a valid, small image; images reach ``imshow`` through ``to_imshow``."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from helpers import load_bench_module
from PIL import Image

from vitlib import plots
from vitlib.data import CLASSES, load_cifar10
from vitlib.relpos import relative_position_index

EXPECTED = {
    "patch_grid.png": ("PNG", 1),
    "relative_index.png": ("PNG", 1),
    "attention_bias.png": ("PNG", 1),
    "vit.gif": ("GIF", 2),
    "ablations.png": ("PNG", 1),
}


@pytest.mark.slow
def test_bench_figures_writes_every_figure(cifar_root, tmp_path):
    out = tmp_path / "Images"
    figures = load_bench_module("figures")
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


def test_the_bias_of_a_query_is_a_window_of_the_offset_table():
    table = torch.arange(31 * 31, dtype=torch.float32).view(31, 31)
    fig = plots.attention_bias_figure(torch.zeros(3, 32, 32), table, query=(5, 9), patch_size=2)
    bias = fig.axes[2].images[0].get_array()  # the third panel: the bias added to each key
    assert bias.shape == (16, 16)
    assert bias[5, 9] == table[15, 15]  # the query itself: zero offset, the table's centre
    assert bias[6, 11] == table[16, 17]  # one row down, two columns right


def test_exploded_keeps_every_patch():
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    canvas = plots.exploded(image, patch_size=2, gap=1.0)
    side = 4 * 2 * 8 * 2 - 2 * 8  # 4 patches of 2 pixels, each pixel 8 wide, 3 gaps of a patch
    assert canvas.shape == (side, side, 3)
    # top-left patch, each pixel drawn as an 8x8 block
    assert abs(canvas[0, 0] - image[:, 0, 0].float().numpy() / 255).max() < 1e-6
    assert abs(canvas[15, 15] - image[:, 1, 1].float().numpy() / 255).max() < 1e-6
    assert (canvas[16:32] == 1).all()  # then white, as wide as a patch
    assert abs(canvas[32, 32] - image[:, 2, 2].float().numpy() / 255).max() < 1e-6


def test_to_imshow_gives_channels_last_floats_in_0_1():
    image = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    pixels = plots.to_imshow(image)
    assert pixels.shape == (4, 5, 3) and pixels.dtype == np.float32
    assert np.array_equal(pixels, image.permute(1, 2, 0).float().numpy() / 255)
    batch = torch.tensor([-0.5, 0.25, 2.0]).view(1, 3, 1, 1)  # float: clamped to [0, 1]
    assert plots.to_imshow(batch).tolist() == [[[[0.0, 0.25, 1.0]]]]
    with pytest.raises(ValueError, match=r"\(3, H, W\) or \(N, 3, H, W\)"):
        plots.to_imshow(torch.zeros(4, 4))


def test_sample_grid_titles(cifar_root):
    images, labels = load_cifar10(cifar_root, split="test", limit=10)
    fig = plots.sample_grid(images, labels, ncols=4)
    titles = [ax.get_title() for ax in fig.axes]
    names = [CLASSES[k] for k in labels.tolist()]
    assert len(fig.axes) == 12 and titles[:10] == names and titles[10:] == ["", ""]
    assert np.array_equal(fig.axes[0].images[0].get_array(), plots.to_imshow(images[0]))
    fig = plots.sample_grid(images.float() / 255, labels, predictions=labels.roll(1), ncols=5)
    assert fig.axes[0].get_title() == f"{names[9]}\n({names[0]})"  # prediction = label of image 9


def test_plot_index_draws_the_index():
    ax = plots.plot_index(2, 3).axes[0]
    assert np.array_equal(ax.images[0].get_array(), relative_position_index(2, 3).numpy())
    assert [t.get_text() for t in ax.texts][:3] == ["7", "8", "9"]  # query 0: offsets (0, 0..2)


def test_plot_training_draws_a_run_or_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        plots.plot_training(tmp_path)
    (tmp_path / "metrics.csv").write_text("epoch,train_loss,test_loss,test_acc,lr\n")
    with pytest.raises(ValueError, match="metrics.csv has no epochs yet"):
        plots.plot_training(tmp_path)
    (tmp_path / "metrics.csv").write_text(
        "epoch,train_loss,test_loss,test_acc,lr\n1,2.0,1.9,0.3,1e-3\n"
    )
    plots.plot_training(tmp_path).savefig(tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_live_curves_redraws_when_the_metrics_change(tmp_path, monkeypatch):
    """Inside the block a thread polls metrics.csv and updates one displayed figure, once per
    change; leaving the block draws the final curves."""
    display = pytest.importorskip("IPython.display")
    shown = []

    class Handle:
        def update(self, fig):
            shown.append(len(fig.axes[1].lines[0].get_xdata()))  # epochs drawn

    monkeypatch.setattr(display, "display", lambda **kwargs: Handle())
    metrics = tmp_path / "metrics.csv"
    with plots.live_curves(tmp_path, every=0.01):
        metrics.write_text("epoch,train_loss,test_loss,test_acc,lr\n1,2.0,1.9,0.3,1e-3\n")
        while not shown:
            time.sleep(0.01)
        with metrics.open("a") as f:
            f.write("2,1.5,1.4,0.5,1e-3\n")
    assert shown == [1, 2]
