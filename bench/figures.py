"""Regenerate the README's figures in ``Images/``, drawn by the ``vitlib.plots`` functions the
notebooks call, plus the animation and the ablation figure that only the README shows.

    python bench/figures.py --out Images --datapath DIR

writes ``patch_grid.png``, ``relative_index.png``, ``attention_bias.png`` and ``vit.gif`` from
CIFAR-10 test image ``SAMPLE_INDEX`` (found through ``--datapath`` or ``$VITLIB_DATA``), and
``ablations.png`` from the committed ablation results (``bench/results/``, notebook 07).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from ablations import read_csv, results_dir
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vitlib.data import CLASSES, load_cifar10
from vitlib.patching import patchify
from vitlib.plots import (
    attention_bias_figure,
    exploded,
    mark_patch,
    patch_grid_figure,
    plot_index,
    to_imshow,
)

SAMPLE_INDEX = 16  # the CIFAR-10 test image the README figures show (a dog)


def toy_attention(image: torch.Tensor, patch_size: int, query: int) -> torch.Tensor:
    """Illustrative attention ``(N,)`` of one query: ``softmax(q.k / sqrt(d) + bias)``.

    Queries and keys are the raw patches (centred); the bias is a hand-set relative one that
    favours nearby keys (``-distance / 2``). A picture of the mechanism, not a trained model.
    """
    pixels = image.float()[None] / (255 if image.dtype == torch.uint8 else 1)
    tokens = patchify(pixels, patch_size)[0]  # (N, p*p*3)
    tokens = tokens - tokens.mean(0)
    side = image.shape[-1] // patch_size
    yx = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1)
    yx = yx.reshape(-1, 2).float()
    bias = -(yx - yx[query]).norm(dim=-1) / 2
    scores = tokens @ tokens[query] * 8 / math.sqrt(tokens.shape[1]) + bias
    return scores.softmax(-1)


def vit_animation(image: torch.Tensor, path: str | Path, patch_size: int = 2, fps: int = 8) -> Path:
    """Animated GIF: the image is cut into patches, they part into tokens, then one query
    token attends to the others (:func:`toy_attention`)."""
    height, width = image.shape[-2:]
    grid = (height // patch_size, width // patch_size)
    queries = [grid[1] * r + c for r, c in [(4, 4), (6, 10), (11, 7), (12, 12)]]
    cut = 1 / (8 * patch_size)  # exploded(): a gap of one white pixel, a grid line
    steps = [("image", 0.0)] * 4 + [("grid", cut)] * 4
    steps += [("part", g) for g in np.linspace(cut, 1.0, 10)] + [("part", 1.0)] * 4
    steps += [("attend", q) for q in queries for _ in range(6)]

    fig = Figure(figsize=(3.2, 3.5), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0.02, 0.02, 0.96, 0.86])

    def draw(frame: int):
        kind, value = steps[frame]
        ax.clear()
        ax.set_axis_off()
        if kind in ("grid", "part"):
            ax.imshow(exploded(image, patch_size, gap=value), interpolation="nearest")
            title = f"{grid[0] * grid[1]} tokens of {patch_size}x{patch_size} pixels"
            if kind == "grid":
                title = f"cut into {patch_size}x{patch_size} patches"
            ax.set_title(title, fontsize=9)
            return []
        ax.imshow(to_imshow(image), interpolation="nearest")
        if kind == "image":
            ax.set_title(f"a {height}x{width} image", fontsize=9)
        else:
            weights = toy_attention(image, patch_size, int(value)).reshape(grid)
            weights = weights / weights.max()
            overlay = np.kron(weights.numpy(), np.ones((patch_size, patch_size)))
            ax.imshow(overlay, cmap="magma", alpha=0.75, vmin=0, vmax=1)
            mark_patch(ax, int(value), grid, patch_size, color="cyan")
            ax.set_title("one query attends to all tokens", fontsize=9)
        return []

    path = Path(path)
    FuncAnimation(fig, draw, frames=len(steps), blit=False).save(path, writer=PillowWriter(fps=fps))
    return path


def ablation_figure(runs: list[dict], curves: list[dict]) -> Figure:
    """Two panels for the rows of ``bench/ablations.py``: test accuracy against the training images
    seen, one line per run (a colour per variant, the full model in black), and the final accuracy
    of every run on all test images, one row per variant with its mean marked."""
    names = list(dict.fromkeys(r["variant"] for r in runs))
    colours = {name: "black" if i == 0 else f"C{i - 1}" for i, name in enumerate(names)}
    fig = Figure(figsize=(13, 4.6), layout="constrained")
    curve_ax, final_ax = fig.subplots(1, 2, width_ratios=(1.3, 1))
    for name in names:
        for seed in sorted({c["seed"] for c in curves if c["variant"] == name}):
            rows = [c for c in curves if c["variant"] == name and c["seed"] == seed]
            label = name if seed == min(c["seed"] for c in curves if c["variant"] == name) else None
            curve_ax.plot([c["images_seen"] / 1000 for c in rows], [100 * c["test_acc"] for c in rows],
                          color=colours[name], lw=1.2, label=label)  # fmt: skip
    curve_ax.set(title="test accuracy during training (2,000 test images)",
                 xlabel="training images seen (thousands)", ylabel="test accuracy (%)")  # fmt: skip
    curve_ax.legend(fontsize=7, ncol=2)
    for row, name in enumerate(names):
        accs = [100 * r["test_acc"] for r in runs if r["variant"] == name]
        final_ax.scatter(accs, [row] * len(accs), color=colours[name], s=18, zorder=3)
        final_ax.plot([sum(accs) / len(accs)] * 2, [row - 0.3, row + 0.3], color=colours[name])
    final_ax.set_yticks(range(len(names)), names, fontsize=8)
    final_ax.invert_yaxis()
    final_ax.set(title="final accuracy, all test images (dots: seeds; bar: mean)",
                 xlabel="test accuracy (%)")  # fmt: skip
    for ax in (curve_ax, final_ax):
        ax.grid(alpha=0.3)
    return fig


def readme_figures(out: str | Path = "Images", datapath: str | None = None) -> list[Path]:
    """Write every figure of the README into ``out``; returns the files' paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = load_cifar10(datapath, split="test", limit=SAMPLE_INDEX + 1)
    image, label = images[SAMPLE_INDEX], CLASSES[int(labels[SAMPLE_INDEX])]
    torch.manual_seed(0)

    patch_grid_figure(image, 2, title=f"CIFAR-10 test image ({label})").savefig(
        out / "patch_grid.png", dpi=100
    )

    plot_index(4, 4).savefig(out / "relative_index.png", dpi=100)

    # An illustrative table: a smooth bump around the zero offset plus a little noise.
    dy, dx = torch.meshgrid(torch.arange(-15, 16), torch.arange(-15, 16), indexing="ij")
    table = torch.exp(-(dy**2 + dx**2).float() / 20) + 0.05 * torch.randn(31, 31)
    attention_bias_figure(image, table, query=(5, 9)).savefig(out / "attention_bias.png", dpi=100)

    vit_animation(image, out / "vit.gif")
    results = [read_csv(results_dir() / f) for f in ("ablations.csv", "ablation_curves.csv")]
    ablation_figure(*results).savefig(out / "ablations.png", dpi=100)
    names = ("patch_grid.png", "relative_index.png", "attention_bias.png", "vit.gif",
             "ablations.png")  # fmt: skip
    return [out / name for name in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out", default="Images", help="folder to write into (default: Images)")
    parser.add_argument("--datapath", default=None,
                        help="folder holding cifar-10-batches-py/ (default: $VITLIB_DATA)")  # fmt: skip
    args = parser.parse_args(argv)
    for path in readme_figures(args.out, args.datapath):
        print(f"{path}  {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
