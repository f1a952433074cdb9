"""Every plot of vitlib, a Figure made without pyplot (any backend)."""

import csv
import json
import threading
from contextlib import contextmanager, suppress
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from .data import CLASSES
from .relpos import offset_table, relative_position_index


def to_imshow(images: Tensor) -> np.ndarray:
    """Images ``([N,] 3, H, W)`` (uint8 or float) -> float32 ``([N,] H, W, 3)`` in [0, 1]."""
    if images.ndim not in (3, 4):
        raise ValueError(f"expected images (3, H, W) or (N, 3, H, W), got {tuple(images.shape)}")
    pixels = images.detach().cpu().float().movedim(-3, -1)
    return (pixels / 255 if images.dtype == torch.uint8 else pixels.clamp(0, 1)).numpy()


def _panels(size: tuple, rows: int = 1, cols: int = 1, style: str = "off", **grid):
    """A ``size``-inch figure, axes ``(rows, cols)``: each "off", "frame" (no ticks) or "plot"."""
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **grid)
    for ax in axes.flat if style != "plot" else []:
        ax.set(xticks=[], yticks=[]) if style == "frame" else ax.set_axis_off()
    return fig, axes


def _show(ax, image: Tensor | np.ndarray, title: str = "", **title_options) -> None:
    """Draw ``image`` (tensor ``(3, H, W)`` or ``to_imshow`` array) pixel by pixel, with a title."""
    ax.imshow(to_imshow(image) if isinstance(image, Tensor) else image, interpolation="nearest")
    ax.set_title(title, **title_options)


def sample_grid(images: Tensor, labels, *, ncols: int = 8, predictions=None,
                names: tuple[str, ...] = CLASSES) -> Figure:  # fmt: skip
    """Images ``(N, 3, H, W)`` titled by ``names``, or by prediction (green: right, red: wrong)."""
    nrows = -(-len(images) // ncols)
    fig, axes = _panels((1.2 * ncols, 1.5 * nrows), nrows, ncols)
    for k, (ax, image) in enumerate(zip(axes.flat, images)):
        truth = names[int(labels[k])]
        guess = truth if predictions is None else names[int(predictions[k])]
        title = truth if predictions is None else f"{guess}\n({truth})"
        color = "black" if predictions is None else "green" if guess == truth else "red"
        _show(ax, image, title, fontsize=7, color=color)
    return fig


def exploded(image: Tensor, patch_size: int, gap: float = 1.0) -> np.ndarray:
    """The image ``(3, H, W)`` with its patches ``gap`` patch-widths apart: ``(H', W', 3)``, each
    pixel an 8x8 block, so that fractional gaps animate smoothly (``1 / (8 * p)``: a grid line)."""
    size, pixels = 8 * patch_size, np.kron(to_imshow(image), np.ones((8, 8, 1)))  # (8H, 8W, 3)
    rows, cols, pad = len(pixels) // size, pixels.shape[1] // size, round(gap * size)
    patches = pixels.reshape(rows, size, cols, size, 3)
    padded = np.pad(patches, ((0, 0), (0, pad), (0, 0), (0, pad), (0, 0)), constant_values=1)
    canvas = padded.reshape(rows * (size + pad), cols * (size + pad), 3)
    return canvas[: len(canvas) - pad, : canvas.shape[1] - pad]  # no gap after the last patch


def mark_patch(ax, token: int, grid: tuple[int, int], patch_size: int, color="red") -> None:
    """Outline token ``token`` (row-major on ``grid``) on an image drawn with ``imshow``."""
    top, left = (patch_size * i - 0.5 for i in divmod(token, grid[1]))  # pixel edges, not centres
    ax.add_patch(Rectangle((left, top), patch_size, patch_size, fill=False, ec=color, lw=2))


def patch_grid_figure(image: Tensor, patch_size: int = 2, title: str = "") -> Figure:
    """The image ``(3, H, W)``, the image with its patch grid, and the patches pulled apart."""
    (height, width), p = image.shape[-2:], patch_size
    fig, [[plain, cut, parted]] = _panels((9, 3.3), 1, 3)
    _show(plain, image, title or f"{height}x{width} image")
    _show(cut, exploded(image, p, gap=1 / (8 * p)), f"{p}x{p} patches")  # 1 white pixel apart
    _show(parted, exploded(image, p), f"{height // p}x{width // p} tokens")
    return fig


def token_strip_figure(patches: Tensor, patch_size: int, count: int = 32) -> Figure:
    """The first ``count`` tokens of ``patches`` ``(N, p*p*3)`` (from ``patchify``), in order."""
    fig, [axes] = _panels((count * 0.3, 0.9), 1, count)
    tokens = patches[:count].reshape(-1, patch_size, patch_size, 3).permute(0, 3, 1, 2)  # (3, p, p)
    for k, (ax, token) in enumerate(zip(axes, tokens, strict=True)):
        _show(ax, token, str(k), fontsize=6)
    return fig


def attention_figure(image: Tensor, weights: Tensor, query: int, patch_size: int,
                     title: str = "") -> Figure:  # fmt: skip
    """Attention weights ``(N,)`` of one query over the keys, beside the image ``(3, H, W)``."""
    grid = (image.shape[-2] // patch_size, image.shape[-1] // patch_size)
    fig, [[image_ax, weights_ax]] = _panels((6.5, 3.3), 1, 2)
    _show(image_ax, image, f"query token {query}")
    mark_patch(image_ax, query, grid, patch_size)
    shown = weights_ax.imshow(weights.detach().reshape(grid).numpy(), cmap="magma")
    mark_patch(weights_ax, query, grid, 1, color="cyan")
    weights_ax.set_title(title or "attention weights over the keys")
    fig.colorbar(shown, ax=weights_ax, fraction=0.046)
    return fig


def masks_figure(masks: dict[str, Tensor], title: str = "") -> Figure:
    """One boolean ``(H, W)`` map per name, side by side (e.g. receptive fields)."""
    fig, [axes] = _panels((3.2 * len(masks), 3.3), 1, len(masks), style="frame")
    for ax, (name, mask) in zip(axes, masks.items(), strict=True):
        ax.imshow(mask.float().numpy(), cmap="Greys", vmin=0, vmax=1)
        ax.set_title(name)
    fig.suptitle(title)
    return fig


def plot_index(height: int, width: int) -> Figure:
    """The relative position index ``(N, N)`` of an ``H x W`` grid (rows: query, columns: key)."""
    index = relative_position_index(height, width).numpy()
    fig, [[ax]] = _panels((5, 5), style="plot")
    fig.colorbar(ax.imshow(index, cmap="viridis"), ax=ax, fraction=0.046)
    ax.set(title=f"relative position index, {height}x{width} grid", xlabel="key token",
           ylabel="query token")  # fmt: skip
    for (q, k), value in np.ndenumerate(index if len(index) <= 16 else []):  # numbers if they fit
        ax.text(k, q, value, ha="center", va="center", fontsize=7, color="w")
    return fig


def attention_bias_figure(image: Tensor, table: Tensor, query: tuple[int, int],
                          patch_size: int = 2) -> Figure:  # fmt: skip
    """The query patch ``(y, x)`` of the image ``(3, H, W)``, the offset table ``(2R-1, 2C-1)`` of
    the ``(R, C)`` grid, and the bias it adds to key ``(i, j)``: ``table[i-y+R-1, j-x+C-1]``."""
    rows, cols = grid = (image.shape[-2] // patch_size, image.shape[-1] // patch_size)
    (y, x), token = query, query[0] * cols + query[1]
    fig, [[image_ax, table_ax, bias_ax]] = _panels((10, 3.6), 1, 3, style="frame")
    _show(image_ax, image, f"query patch at row {y}, column {x}")
    mark_patch(image_ax, token, grid, patch_size)
    limit = float(table.abs().max())
    colours = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}
    table_ax.imshow(table.detach().numpy(), **colours)
    table_ax.add_patch(Rectangle((cols - 1.5 - x, rows - 1.5 - y), cols, rows, fill=False, lw=2))
    table_ax.set_title(f"offset table {2 * rows - 1}x{2 * cols - 1} (centre: zero offset)")
    bias = table[rows - 1 - y : 2 * rows - 1 - y, cols - 1 - x : 2 * cols - 1 - x]  # (R, C)
    shown = bias_ax.imshow(bias.detach().numpy(), **colours)
    mark_patch(bias_ax, token, grid, 1)
    bias_ax.set_title("bias added to each key's score")
    fig.colorbar(shown, ax=bias_ax, fraction=0.046)
    return fig


def offset_tables_figure(tables: Tensor, grid: tuple[int, int], title: str = "") -> Figure:
    """Tables ``(blocks, heads, (2H-1)(2W-1))`` as offset images, one scale (red: a score bonus)."""
    (blocks, heads), limit = tables.shape[:2], tables.abs().max().item() or 1.0  # one colour scale
    fig, axes = _panels((1.4 * heads + 0.8, 1.5 * blocks), blocks, heads, style="frame")
    for (b, h), ax in np.ndenumerate(axes):
        shown = ax.imshow(offset_table(tables[b, h], *grid), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set(title=f"head {h}" if b == 0 else "", ylabel=f"block {b}" if h == 0 else "")
    fig.suptitle(title)
    fig.colorbar(shown, ax=axes, shrink=0.6, label="bias added to the score")
    return fig


def load_reference_log() -> dict[str, list[float]]:
    """The reference run's log (200 epochs, 96.80%) as columns: epoch, train_loss (a running mean),
    test_loss, test_acc, and the lr of each epoch (logged one epoch early; nan for epoch 1)."""
    with (resources.files("vitlib") / "reference" / "seed_run_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    renamed = {"train_loss_running_avg": "train_loss", "lr_set_for_next_epoch": "lr"}
    log = {renamed.get(name, name): [float(r[name]) for r in rows] for name in rows[0]}
    return {**log, "lr": [float("nan")] + log["lr"][:-1]}


def read_metrics(run_dir: str | Path) -> dict[str, list[float]]:
    """A run's metrics.csv as columns of floats."""
    rows = list(csv.DictReader((Path(run_dir) / "metrics.csv").read_text().splitlines()))
    if not rows:
        raise ValueError(f"{run_dir}/metrics.csv has no epochs yet")
    return {key: [float(r[key]) for r in rows] for key in rows[0]}


def plot_training(run_dir: str | Path, reference: bool = True) -> Figure:
    """Train/test loss, test accuracy (%) and learning rate (log scale) of a run against epoch,
    over the epochs its config.json plans; the reference run's are stretched to the same width."""
    metrics, config = read_metrics(run_dir), Path(run_dir) / "config.json"
    total = json.loads(config.read_text())["epochs"] if config.exists() else max(metrics["epoch"])
    fig, [[loss_ax, acc_ax, lr_ax]] = _panels((13, 3.8), 1, 3, style="plot")
    curves = [("this run", metrics, 1.0, "-")]
    if reference:
        log = load_reference_log()
        curves.append(("reference (V100, 96.80%), stretched", log, total / len(log["epoch"]), "--"))
    for label, m, stretch, style in curves:
        x = [stretch * e for e in m["epoch"]]
        loss_ax.plot(x, m["train_loss"], style, color="C0", label=f"train, {label}")
        loss_ax.plot(x, m["test_loss"], style, color="C1", label=f"test, {label}")
        acc_ax.plot(x, [100 * a for a in m["test_acc"]], style, color="C2", label=label)
        lr_ax.plot(x, m["lr"], style, color="C3", label=label)
    for ax, title in ((loss_ax, "loss"), (acc_ax, "test accuracy (%)"), (lr_ax, "learning rate")):
        ax.set(title=title, xlabel="epoch", xlim=(0, total))
        ax.legend(fontsize=8)
    lr_ax.set_yscale("log")
    return fig


def plot_confusion(confusion: Tensor, classes: tuple[str, ...]) -> Figure:
    """Counts ``(K, K)`` (rows: true class) coloured by share of the row, and per-class accuracy."""
    percent = 100 * confusion / confusion.sum(dim=1, keepdim=True)
    fig, [[matrix_ax, bar_ax]] = _panels((13, 5.2), 1, 2, style="plot", width_ratios=(1.3, 1))
    matrix_ax.imshow(percent.numpy(), cmap="Blues", vmin=0, vmax=100)
    for (t, p), count in np.ndenumerate(confusion.numpy()):
        color = "white" if percent[t, p] > 50 else "black"
        matrix_ax.text(p, t, count, ha="center", va="center", fontsize=7, color=color)
    matrix_ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    matrix_ax.set_yticks(range(len(classes)), classes)
    matrix_ax.set(xlabel="predicted", ylabel="true class", title="counts; colour: % of the row")
    bar_ax.barh(classes, percent.diag().numpy())
    bar_ax.set(xlim=(0, 105), xlabel="accuracy (%)", title="per-class accuracy")
    bar_ax.invert_yaxis()
    return fig


def plot_attention(image: Tensor, maps: Tensor, query: int, grid) -> Figure:
    """What token ``query`` (row-major on ``grid``) attends to, over the image ``(3, H, W)``:
    ``maps`` ``(blocks, heads, N, N)`` (``vitlib.evaluate.attention_maps``), a row per block."""
    (blocks, heads), cell = maps.shape[:2], image.shape[-2] // grid[0]  # cell: pixels per token
    fig, axes = _panels((1.3 * (heads + 1), 1.35 * blocks), blocks, heads + 1, style="frame")
    for (b, h), ax in np.ndenumerate(axes):
        _show(ax, image, ("query" if h == 0 else f"head {h - 1}") if b == 0 else "", fontsize=8)
        ax.set_ylabel(f"block {b}" if h == 0 else "", fontsize=8)
        mark_patch(ax, query, grid, cell, color="cyan")
        if h > 0:
            weights = maps[b, h - 1, query].reshape(grid).numpy()
            ax.imshow(np.kron(weights, np.ones((cell, cell))), cmap="magma", alpha=0.75)
    return fig


@contextmanager
def live_curves(run_dir: str | Path, every: float = 5.0):
    """In a notebook, ``with live_curves(run_dir): train(config)`` shows live ``plot_training``."""
    from IPython.display import display

    handle, stop = display(display_id=True), threading.Event()

    def poll() -> None:
        drawn, stopped = None, False  # drawn: the mtime of the metrics.csv shown
        while not stopped:
            stopped = stop.wait(every)  # True once the block has ended: then a last look
            with suppress(OSError, ValueError, KeyError):  # not written yet, or caught mid-write
                if (changed := (Path(run_dir) / "metrics.csv").stat().st_mtime) != drawn:
                    handle.update(plot_training(run_dir))
                    drawn = changed

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
