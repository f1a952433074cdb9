"""Plots used by the notebooks, and the command that regenerates every README figure.

    python -m vitlib.figures [--out Images] [--datapath DIR]

writes ``patch_grid.png``, ``relative_index.png``, ``attention_bias.png`` and ``vit.gif`` from
one CIFAR-10 test image (found through ``--datapath`` or ``$VITLIB_DATA``). Every function here
returns a matplotlib ``Figure`` built without ``pyplot``, so it works in any backend and in a
notebook displays as a PNG.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .relpos import offset_table, plot_index

# The CIFAR-10 test image the README figures show (a dog).
SAMPLE_INDEX = 16


def to_pixels(image: torch.Tensor) -> np.ndarray:
    """An image ``(3, H, W)``, uint8 or float in ``[0, 1]`` -> an ``(H, W, 3)`` float array."""
    image = image.detach().cpu()
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float().clamp(0, 1)
    return image.permute(1, 2, 0).numpy()


def exploded(image: torch.Tensor, patch_size: int, gap: float = 1.0) -> np.ndarray:
    """The image with its ``p x p`` patches pulled apart by ``gap`` patch-widths of white.

    Returns an ``(H', W', 3)`` array; each pixel is drawn as a block of ``scale`` pixels so that
    fractional gaps animate smoothly.
    """
    pixels = to_pixels(image)
    height, width, _ = pixels.shape
    rows, cols = height // patch_size, width // patch_size
    scale = 4
    step = round((patch_size + gap * patch_size) * scale)
    size = patch_size * scale
    canvas = np.ones((rows * step - (step - size), cols * step - (step - size), 3))
    block = np.kron(pixels, np.ones((scale, scale, 1)))
    for r in range(rows):
        for c in range(cols):
            canvas[r * step : r * step + size, c * step : c * step + size] = block[
                r * size : (r + 1) * size, c * size : (c + 1) * size
            ]
    return canvas


def draw_grid(ax, height: int, width: int, patch_size: int, color: str = "white") -> None:
    """Lines between the ``p x p`` patches of an ``H x W`` image drawn with ``imshow``."""
    for k in range(0, height + 1, patch_size):
        ax.axhline(k - 0.5, color=color, linewidth=0.6)
    for k in range(0, width + 1, patch_size):
        ax.axvline(k - 0.5, color=color, linewidth=0.6)


def mark_patch(ax, token: int, grid: tuple[int, int], patch_size: int, color: str = "red") -> None:
    """Outline token ``token`` (row-major on ``grid``) on an image drawn with ``imshow``."""
    y, x = divmod(token, grid[1])
    ax.add_patch(
        Rectangle(
            (x * patch_size - 0.5, y * patch_size - 0.5),
            patch_size,
            patch_size,
            fill=False,
            edgecolor=color,
            linewidth=2,
        )
    )


def patch_grid_figure(image: torch.Tensor, patch_size: int = 2, title: str = "") -> Figure:
    """The image, the image with its patch grid, and the patches pulled apart."""
    height, width = image.shape[-2:]
    fig = Figure(figsize=(9, 3.3))
    axes = fig.subplots(1, 3)
    axes[0].imshow(to_pixels(image), interpolation="nearest")
    axes[0].set_title(title or f"{height}x{width} image")
    axes[1].imshow(to_pixels(image), interpolation="nearest")
    draw_grid(axes[1], height, width, patch_size)
    axes[1].set_title(f"{patch_size}x{patch_size} patches")
    axes[2].imshow(exploded(image, patch_size), interpolation="nearest")
    grid = (height // patch_size, width // patch_size)
    axes[2].set_title(f"{grid[0]}x{grid[1]} = {grid[0] * grid[1]} tokens")
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def token_strip_figure(patches: torch.Tensor, patch_size: int, count: int = 32) -> Figure:
    """The first ``count`` tokens of ``patches`` ``(N, p*p*3)`` (from ``patchify``), in order."""
    fig = Figure(figsize=(count * 0.3, 0.9))
    axes = fig.subplots(1, count)
    for k, ax in enumerate(axes):
        patch = patches[k].reshape(patch_size, patch_size, 3)  # (row, column, channel)
        patch = patch.float() / 255 if patch.dtype == torch.uint8 else patch.float()
        ax.imshow(patch.numpy(), interpolation="nearest")
        ax.set_title(str(k), fontsize=6)
        ax.set_axis_off()
    return fig


def attention_figure(
    image: torch.Tensor, weights: torch.Tensor, query: int, patch_size: int, title: str = ""
) -> Figure:
    """Attention weights ``(N,)`` of one query over the keys, drawn on the image's grid."""
    height, width = image.shape[-2:]
    grid = (height // patch_size, width // patch_size)
    fig = Figure(figsize=(6.5, 3.3))
    axes = fig.subplots(1, 2)
    axes[0].imshow(to_pixels(image), interpolation="nearest")
    mark_patch(axes[0], query, grid, patch_size)
    axes[0].set_title(f"query token {query}")
    shown = axes[1].imshow(weights.detach().reshape(grid).numpy(), cmap="magma")
    mark_patch(axes[1], query, grid, 1, color="cyan")
    axes[1].set_title(title or "attention weights over the keys")
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def masks_figure(masks: dict[str, torch.Tensor], title: str = "") -> Figure:
    """One boolean ``(H, W)`` map per name, side by side (e.g. receptive fields)."""
    fig = Figure(figsize=(3.2 * len(masks), 3.3))
    axes = np.atleast_1d(fig.subplots(1, len(masks)))
    for ax, (name, mask) in zip(axes, masks.items()):
        ax.imshow(mask.float().numpy(), cmap="Greys", vmin=0, vmax=1)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def query_bias(table: torch.Tensor, query: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """The ``(H, W)`` bias one query at ``(y, x)`` adds to every key: a window of the offset table.

    table: ``(2H-1, 2W-1)`` (see :func:`vitlib.relpos.offset_table`); key ``(y_k, x_k)`` reads
    ``table[y_k - y + H - 1, x_k - x + W - 1]``.
    """
    (y, x), (height, width) = query, grid
    return table[height - 1 - y : 2 * height - 1 - y, width - 1 - x : 2 * width - 1 - x]


def attention_bias_figure(
    image: torch.Tensor, table: torch.Tensor, query: tuple[int, int], patch_size: int = 2
) -> Figure:
    """A query patch, its window in the offset table, and the bias it adds to every key."""
    height, width = image.shape[-2:]
    grid = (height // patch_size, width // patch_size)
    y, x = query
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 3)
    axes[0].imshow(to_pixels(image), interpolation="nearest")
    draw_grid(axes[0], height, width, patch_size, color=(1, 1, 1, 0.3))
    mark_patch(axes[0], y * grid[1] + x, grid, patch_size)
    axes[0].set_title(f"query patch at row {y}, column {x}")
    limit = float(table.abs().max())
    axes[1].imshow(table.detach().numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[1].add_patch(
        Rectangle(
            (grid[1] - 1 - x - 0.5, grid[0] - 1 - y - 0.5),
            grid[1],
            grid[0],
            fill=False,
            edgecolor="black",
            linewidth=2,
        )
    )
    axes[1].plot([grid[1] - 1], [grid[0] - 1], "k+", markersize=10)
    axes[1].set_title(f"offset table {2 * grid[0] - 1}x{2 * grid[1] - 1} (+: zero offset)")
    bias = query_bias(table, query, grid)
    shown = axes[2].imshow(bias.detach().numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
    mark_patch(axes[2], y * grid[1] + x, grid, 1, color="red")
    axes[2].set_title("bias added to each key's score")
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def offset_tables_figure(tables: torch.Tensor, grid: tuple[int, int], title: str = "") -> Figure:
    """Relative position tables ``(blocks, heads, (2H-1)(2W-1))`` as offset images, one per head.

    All panels share one colour scale centred on 0: red is a bonus added to the attention score
    of keys at that offset, blue a penalty."""
    blocks, heads = tables.shape[:2]
    tables = tables.detach().cpu()
    limit = tables.abs().max().item() or 1.0
    fig = Figure(figsize=(1.4 * heads + 0.8, 1.5 * blocks))
    axes = fig.subplots(blocks, heads, squeeze=False)
    for b in range(blocks):
        for h in range(heads):
            ax = axes[b, h]
            image = ax.imshow(
                offset_table(tables[b, h], *grid).numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if b == 0:
                ax.set_title(f"head {h}", fontsize=8)
            if h == 0:
                ax.set_ylabel(f"block {b}", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.colorbar(image, ax=axes, shrink=0.6, label="bias added to the score")
    return fig


def toy_attention(image: torch.Tensor, patch_size: int, query: int) -> torch.Tensor:
    """Illustrative attention ``(N,)`` of one query: ``softmax(q.k / sqrt(d) + bias)``.

    Queries and keys are the raw patches (centred); the bias is a hand-set relative one that
    favours nearby keys (``-distance / 2``). A picture of the mechanism, not a trained model.
    """
    from .patching import patchify

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
    steps = [("image", 0.0)] * 4 + [("grid", 0.0)] * 4
    steps += [("part", g) for g in np.linspace(0.0, 1.0, 10)] + [("part", 1.0)] * 4
    steps += [("attend", q) for q in queries for _ in range(6)]

    fig = Figure(figsize=(3.2, 3.5), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0.02, 0.02, 0.96, 0.86])

    def draw(frame: int):
        kind, value = steps[frame]
        ax.clear()
        ax.set_axis_off()
        if kind == "part":
            ax.imshow(exploded(image, patch_size, gap=value), interpolation="nearest")
            ax.set_title(
                f"{grid[0] * grid[1]} tokens of {patch_size}x{patch_size} pixels", fontsize=9
            )
            return []
        ax.imshow(to_pixels(image), interpolation="nearest")
        if kind == "image":
            ax.set_title(f"a {height}x{width} image", fontsize=9)
        elif kind == "grid":
            draw_grid(ax, height, width, patch_size)
            ax.set_title(f"cut into {patch_size}x{patch_size} patches", fontsize=9)
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


def main(argv: list[str] | None = None) -> int:
    """Regenerate every figure of the README into ``--out``."""
    from .data import CLASSES, load_cifar10

    parser = argparse.ArgumentParser(prog="python -m vitlib.figures", description=main.__doc__)
    parser.add_argument("--out", default="Images", help="output folder (default: Images)")
    parser.add_argument(
        "--datapath",
        default=None,
        help="folder holding cifar-10-batches-py/ (default: $VITLIB_DATA)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    images, labels = load_cifar10(args.datapath, split="test", limit=SAMPLE_INDEX + 1)
    image, label = images[SAMPLE_INDEX], CLASSES[int(labels[SAMPLE_INDEX])]
    torch.manual_seed(0)

    patch_grid_figure(image, 2, title=f"CIFAR-10 test image ({label})").savefig(
        out / "patch_grid.png", dpi=100
    )

    fig = Figure(figsize=(6, 5.2))
    plot_index(4, 4, ax=fig.add_subplot())
    fig.tight_layout()
    fig.savefig(out / "relative_index.png", dpi=100)

    # An illustrative table: a smooth bump around the zero offset plus a little noise.
    dy, dx = torch.meshgrid(torch.arange(-15, 16), torch.arange(-15, 16), indexing="ij")
    table = torch.exp(-(dy**2 + dx**2).float() / 20) + 0.05 * torch.randn(31, 31)
    attention_bias_figure(image, table, query=(5, 9)).savefig(out / "attention_bias.png", dpi=100)

    vit_animation(image, out / "vit.gif")
    for name in ("patch_grid.png", "relative_index.png", "attention_bias.png", "vit.gif"):
        size = (out / name).stat().st_size
        print(f"{out / name}  {size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
