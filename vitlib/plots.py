"""Every plot of vitlib: images and patches, attention, relative positions, training curves
and results. The only module that imports matplotlib.

    fig = plot_training("runs/reference")        # a matplotlib Figure; fig.savefig("curves.png")
    python -m vitlib.plots runs/reference --output curves.png

Every function returns a matplotlib ``Figure`` built without ``pyplot`` (so it works in any
backend and displays as a PNG in a notebook), except :func:`plot_index`, which draws on a given
``ax`` or a new pyplot figure. Images are drawn through :func:`to_imshow`.

The training curves overlay the reference run, the recorded 96.80% run
(``vitlib/reference/seed_run_log.csv``, see the README there). Its train loss is a running
average over the epoch, ours the epoch mean; both test losses include label smoothing 0.1. Its
learning rate column was set after each epoch and used in the next one, so it is drawn one
epoch later.

The README's figures (and its animation) are drawn by ``bench/figures.py`` with these functions.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .data import CLASSES
from .relpos import offset_table, relative_position_index

# ---------------------------------------------------------------- images and patches


def to_imshow(images: torch.Tensor) -> np.ndarray:
    """Images as ``imshow`` draws them: uint8 (0..255) or float (in ``[0, 1]``, clamped),
    ``(3, H, W)`` or ``(N, 3, H, W)``, on any device -> a float32 array ``(H, W, 3)`` or
    ``(N, H, W, 3)`` in ``[0, 1]``, channels last."""
    if images.ndim not in (3, 4):
        raise ValueError(f"expected images (3, H, W) or (N, 3, H, W), got {tuple(images.shape)}")
    pixels = images.detach().cpu()
    pixels = pixels.float() / 255 if pixels.dtype == torch.uint8 else pixels.float().clamp(0, 1)
    return pixels.movedim(-3, -1).numpy()


def sample_grid(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    *,
    ncols: int = 8,
    predictions: Sequence[int] | torch.Tensor | None = None,
    classes: Sequence[str] = CLASSES,
    scale: float = 1.2,
) -> Figure:
    """Images with their class names (and predictions, if given: green when right, red when
    wrong). images uint8 or float in [0, 1], (N, 3, H, W)."""
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(
            f"expected images (N, C, H, W) and N labels, got {tuple(images.shape)} and {len(labels)}"
        )
    pixels = to_imshow(images)
    n = len(pixels)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(scale * ncols, scale * nrows + 0.3 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= n:
            continue
        ax.imshow(pixels[k], interpolation="nearest")
        title = classes[int(labels[k])]
        if predictions is not None:
            guess = int(predictions[k])
            title = f"{classes[guess]}\n({title})"
            ax.set_title(title, fontsize=7, color="green" if guess == int(labels[k]) else "red")
        else:
            ax.set_title(title, fontsize=7)
    fig.tight_layout()
    return fig


def exploded(image: torch.Tensor, patch_size: int, gap: float = 1.0) -> np.ndarray:
    """The image with its ``p x p`` patches pulled apart by ``gap`` patch-widths of white.

    Returns an ``(H', W', 3)`` array; each pixel is drawn as a block of ``scale`` pixels so that
    fractional gaps animate smoothly.
    """
    pixels = to_imshow(image)
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
    axes[0].imshow(to_imshow(image), interpolation="nearest")
    axes[0].set_title(title or f"{height}x{width} image")
    axes[1].imshow(to_imshow(image), interpolation="nearest")
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
    # each token holds (row, column, channel) values: back to (3, p, p) images
    tokens = patches[:count].reshape(-1, patch_size, patch_size, 3).permute(0, 3, 1, 2)
    for k, (ax, tile) in enumerate(zip(axes, to_imshow(tokens), strict=True)):
        ax.imshow(tile, interpolation="nearest")
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
    axes[0].imshow(to_imshow(image), interpolation="nearest")
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


# ---------------------------------------------------------------- relative positions


def plot_index(height: int, width: int, ax=None):
    """Draw the ``(N, N)`` index matrix of an ``H x W`` grid (rows: queries, columns: keys) on
    ``ax`` (default: a new pyplot figure, so that a notebook shows it). Returns the axes."""
    index = relative_position_index(height, width)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5, 5))
    image = ax.imshow(index.numpy(), cmap="viridis")
    ax.set_title(f"relative position index, {height}x{width} grid")
    ax.set_xlabel("key token")
    ax.set_ylabel("query token")
    if index.shape[0] <= 16:
        for q in range(index.shape[0]):
            for k in range(index.shape[1]):
                ax.text(k, q, int(index[q, k]), ha="center", va="center", fontsize=7, color="w")
    ax.figure.colorbar(image, ax=ax, fraction=0.046)
    return ax


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
    axes[0].imshow(to_imshow(image), interpolation="nearest")
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


# ---------------------------------------------------------------- training curves and results


def load_reference_log() -> dict[str, list[float]]:
    """The reference run's log as columns: epoch, train_loss, test_loss, test_acc, lr (the lr
    used during that epoch; nan for epoch 1, which the log does not record)."""
    path = resources.files("vitlib") / "reference" / "seed_run_log.csv"
    with path.open() as f:
        rows = list(csv.DictReader(f))
    next_lr = [float(r["lr_set_for_next_epoch"]) for r in rows]
    return {
        "epoch": [float(r["epoch"]) for r in rows],
        "train_loss": [float(r["train_loss_running_avg"]) for r in rows],
        "test_loss": [float(r["test_loss"]) for r in rows],
        "test_acc": [float(r["test_acc"]) for r in rows],
        "lr": [float("nan")] + next_lr[:-1],
    }


def read_metrics(run_dir: str | Path) -> dict[str, list[float]]:
    """A run's metrics.csv as columns of floats."""
    with open(Path(run_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{run_dir}/metrics.csv has no epochs yet")
    return {key: [float(r[key]) for r in rows] for key in rows[0]}


def planned_epochs(run_dir: str | Path) -> int | None:
    """The ``epochs`` a run directory's config.json plans, or None without one."""
    try:
        return int(json.loads((Path(run_dir) / "config.json").read_text())["epochs"])
    except (OSError, ValueError, KeyError):
        return None


def plot_training(
    run: str | Path | dict, reference: bool = True, epochs: int | None = None
) -> Figure:
    """Three panels against epoch: train/test loss, test accuracy (%), learning rate (log).

    ``run``: a run directory or ``read_metrics`` output. The x-axis spans the run's ``epochs``
    (default: what its config.json plans, else the epochs recorded so far). The reference run
    is drawn over the same width: its 200 epochs are rescaled to this run's length, with its own
    epochs on the top axis, unless the run is 200 epochs long too."""
    metrics = read_metrics(run) if not isinstance(run, dict) else run
    if epochs is None and not isinstance(run, dict):
        epochs = planned_epochs(run)
    total = epochs or max(metrics["epoch"])
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    curves = [("this run", metrics, 1.0, "-")]
    if reference:
        log = load_reference_log()
        scale = total / len(log["epoch"])
        label = "reference (V100, 96.80%)"
        if scale != 1:
            label += f", {len(log['epoch'])} epochs drawn as {total:g}"
        curves.append((label, log, scale, "--"))
    for label, m, x_scale, style in curves:
        x = [x_scale * e for e in m["epoch"]]
        loss_ax.plot(x, m["train_loss"], style, color="C0", label=f"train, {label}")
        loss_ax.plot(x, m["test_loss"], style, color="C1", label=f"test, {label}")
        acc_ax.plot(x, [100 * a for a in m["test_acc"]], style, color="C2", label=label)
        lr_ax.plot(x, m["lr"], style, color="C3", label=label)
    for ax, title in ((loss_ax, "loss"), (acc_ax, "test accuracy (%)"), (lr_ax, "learning rate")):
        ax.set(title=title, xlabel="epoch (this run)", xlim=(0, total))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if reference and scale != 1:
            top = ax.secondary_xaxis(
                "top", functions=(lambda x, s=scale: x / s, lambda x, s=scale: x * s)
            )
            top.set_xlabel("reference epoch", fontsize=8)
    lr_ax.set_yscale("log")
    return fig


def plot_confusion(confusion, classes: tuple[str, ...]) -> Figure:
    """The confusion matrix (K, K) (rows: true class) as row percentages with counts, and the
    per-class accuracy (its diagonal over the row sums) as bars."""
    counts = confusion.double()
    percent = 100 * counts / counts.sum(dim=1, keepdim=True)
    fig = Figure(figsize=(13, 5.2), layout="constrained")
    matrix_ax, bar_ax = fig.subplots(1, 2, width_ratios=(1.3, 1))
    shown = matrix_ax.imshow(percent.numpy(), cmap="Blues", vmin=0, vmax=100)
    for t in range(len(classes)):
        for p in range(len(classes)):
            color = "white" if percent[t, p] > 50 else "black"
            matrix_ax.text(
                p, t, int(counts[t, p]), ha="center", va="center", fontsize=7, color=color
            )
    ticks = range(len(classes))
    matrix_ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true class")
    matrix_ax.set_xticklabels(classes, rotation=45, ha="right")
    matrix_ax.set_yticklabels(classes)
    matrix_ax.set_title("confusion matrix (counts; colour: % of the true class)")
    fig.colorbar(shown, ax=matrix_ax, fraction=0.046)
    accuracy = (100 * counts.diag() / counts.sum(dim=1)).tolist()
    bar_ax.barh(list(ticks), accuracy, color="C0")
    bar_ax.set(yticks=ticks, xlim=(0, 100), xlabel="accuracy (%)", title="per-class accuracy")
    bar_ax.set_yticklabels(classes)
    bar_ax.invert_yaxis()
    for k, a in enumerate(accuracy):
        bar_ax.text(min(a, 88) + 1, k, f"{a:.1f}", va="center", fontsize=8)
    return fig


def plot_attention(image, maps, query: int, grid: tuple[int, int]) -> Figure:
    """What one query token attends to, for every block (rows) and head (columns), drawn over
    the image. image uint8 or float (3, H, W); maps (blocks, heads, N, N) from
    ``vitlib.evaluate.attention_maps``; ``query`` a token index (row-major on ``grid``)."""
    blocks, heads = maps.shape[:2]
    height, width = image.shape[-2:]
    pixels = to_imshow(image)
    y, x = divmod(query, grid[1])
    cell = (height // grid[0], width // grid[1])
    fig = Figure(figsize=(1.3 * (heads + 1), 1.35 * blocks), layout="constrained")
    axes = fig.subplots(blocks, heads + 1, squeeze=False)
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    for b in range(blocks):
        axes[b, 0].imshow(pixels, interpolation="nearest")
        axes[b, 0].add_patch(_query_box(x, y, cell))
        axes[b, 0].set_ylabel(f"block {b}", fontsize=8)
        for h in range(heads):
            ax = axes[b, h + 1]
            ax.imshow(pixels, interpolation="nearest")
            weights = maps[b, h, query].reshape(grid)
            ax.imshow(weights.numpy(), cmap="magma", alpha=0.75, extent=extent)
            ax.add_patch(_query_box(x, y, cell))
            if b == 0:
                ax.set_title(f"head {h}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("query", fontsize=8)
    return fig


def _query_box(x: int, y: int, cell: tuple[int, int]) -> Rectangle:
    return Rectangle((x * cell[1] - 0.5, y * cell[0] - 0.5), cell[1], cell[0],
                     fill=False, edgecolor="cyan", linewidth=1.2)  # fmt: skip


class LiveCurves:
    """Redraws ``plot_training(run_dir)`` in a notebook while a run writes its metrics.csv.

        with LiveCurves("runs/notebook"):
            train(config)

    A background thread polls metrics.csv every ``every`` seconds and updates one displayed
    figure when the file has new epochs; leaving the block draws the final curves."""

    def __init__(self, run_dir: str | Path, every: float = 5.0, reference: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.every, self.reference = every, reference
        self.handle, self.shown = None, -1

    def _redraw(self) -> None:
        try:
            metrics = read_metrics(self.path.parent)
        except (OSError, ValueError, KeyError):  # not written yet, or caught mid-write
            return
        if len(metrics["epoch"]) != self.shown:
            self.shown = len(metrics["epoch"])
            epochs = planned_epochs(self.path.parent)
            self.handle.update(plot_training(metrics, reference=self.reference, epochs=epochs))

    def _poll(self) -> None:
        while not self.stop.wait(self.every):
            self._redraw()

    def __enter__(self) -> LiveCurves:
        import threading

        from IPython.display import display

        waiting = {"text/plain": f"(curves appear here once {self.path} has an epoch)"}
        self.handle = display(waiting, raw=True, display_id=True)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self._redraw()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitlib.plots",
        description="Plot a run's training curves beside the reference run's.",
        allow_abbrev=False,
    )
    parser.add_argument("run_dir", help="a run directory holding metrics.csv")
    parser.add_argument("--output", default=None, help="image file (default: RUN_DIR/curves.png)")
    parser.add_argument(
        "--no-reference", action="store_true", help="do not overlay the reference run"
    )
    args = parser.parse_args(argv)
    try:
        fig = plot_training(args.run_dir, reference=not args.no_reference)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    output = args.output or str(Path(args.run_dir) / "curves.png")
    fig.savefig(output, dpi=120)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
