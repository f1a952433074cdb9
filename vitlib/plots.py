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


def plot_training(run: str | Path | dict, reference: bool = True) -> Figure:
    """Three panels against epoch: train/test loss, test accuracy (%), learning rate (log).
    ``run``: a run directory or ``read_metrics`` output."""
    metrics = read_metrics(run) if not isinstance(run, dict) else run
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    curves = [("this run", metrics, "-")]
    if reference:
        curves.append(("reference (V100, 96.80%)", load_reference_log(), "--"))
    for label, m, style in curves:
        loss_ax.plot(m["epoch"], m["train_loss"], style, color="C0", label=f"train, {label}")
        loss_ax.plot(m["epoch"], m["test_loss"], style, color="C1", label=f"test, {label}")
        acc_ax.plot(m["epoch"], [100 * a for a in m["test_acc"]], style, color="C2", label=label)
        lr_ax.plot(m["epoch"], m["lr"], style, color="C3", label=label)
    for ax, title in ((loss_ax, "loss"), (acc_ax, "test accuracy (%)"), (lr_ax, "learning rate")):
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    lr_ax.set_yscale("log")
    return fig


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
