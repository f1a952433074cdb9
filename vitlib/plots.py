"""Training curves (loss, accuracy, learning rate per epoch) with the reference run overlaid.

    fig = plot_training("runs/reference")        # a matplotlib Figure; fig.savefig("curves.png")
    python -m vitlib.plots runs/reference --output curves.png

The reference is the recorded 96.80% run (``vitlib/reference/seed_run_log.csv``, see the README
there). Its train loss is a running average over the epoch, ours the epoch mean; both test
losses include label smoothing 0.1. Its learning rate column was set after each epoch and used
in the next one, so it is drawn one epoch later.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from importlib import resources
from pathlib import Path

from matplotlib.figure import Figure


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
    the image. image uint8 (3, H, W); maps (blocks, heads, N, N) from
    ``vitlib.evaluate.attention_maps``; ``query`` a token index (row-major on ``grid``)."""
    blocks, heads = maps.shape[:2]
    height, width = image.shape[-2:]
    pixels = image.permute(1, 2, 0).float().div(255).numpy()
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


def _query_box(x: int, y: int, cell: tuple[int, int]):
    from matplotlib.patches import Rectangle

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
        description="Plot a run's training curves.",
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
