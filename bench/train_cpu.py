"""Time-to-accuracy of the cpu-quick preset on this CPU.

For each time budget (default 5, 10 and 20 minutes of training) the run is planned to fit: the
throughput of the model is measured first, the number of images that fit in the budget is
split into whole epochs, and one warmup + cosine covers exactly that run (the right way to
train against a clock). Test accuracy is then measured on the full test set.

    python bench/train_cpu.py                      # 5/10/20 minutes (about 40 minutes in all)
    python bench/train_cpu.py --budgets 2          # one 2-minute run
    python bench/train_cpu.py --smoke              # seconds, tiny model: checks that it works

Appends a table to bench/RESULTS.md (or --results PATH) with date, hardware, versions, command.
Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from common import RESULTS, markdown_table, record, time_call
from model_speed import make_train_step

from vitlib.config import TRAIN_SIZE, preset_config, resolve_precision
from vitlib.train import train

SMOKE_MODEL = {"depth": 1, "dim": 32, "head_channels": 16}


def images_per_second(model_overrides: dict, batch_size: int, steps: int) -> float:
    """Training throughput (forward + backward + AdamW) of the cpu-quick model on random data,
    in the preset's precision (bf16 autocast, as the training run uses it)."""
    config = preset_config("cpu-quick")
    bf16 = resolve_precision(config.precision, torch.device("cpu")) == "bf16"
    step = make_train_step(config.model, "fast", batch_size, bf16=bf16, **model_overrides)
    return batch_size / time_call(step, repeats=steps)


def plan(budget_s: float, rate: float, batch_size: int) -> tuple[int, int]:
    """(epochs, train images per epoch) that fill ``budget_s`` seconds at ``rate`` images/s."""
    total = max(int(budget_s * rate), batch_size)
    epochs = max(1, round(total / TRAIN_SIZE))
    per_epoch = min(TRAIN_SIZE, max(batch_size, total // epochs // batch_size * batch_size))
    return epochs, per_epoch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument(
        "--budgets", type=float, nargs="+", default=[5, 10, 20], help="minutes of training per run"
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds with a tiny model")
    parser.add_argument(
        "--results",
        default=str(RESULTS),
        help="markdown file to append to",
    )
    parser.add_argument(
        "--datapath",
        default=None,
        help="folder holding cifar-10-batches-py/ (default: $VITLIB_DATA)",
    )
    args = parser.parse_args(argv)
    overrides = SMOKE_MODEL if args.smoke else {}
    budgets = [0.05] if args.smoke else args.budgets
    test_limit = 200 if args.smoke else None
    batch = preset_config("cpu-quick").batch_size
    rate = images_per_second(overrides, batch, steps=2 if args.smoke else 5)
    print(
        f"cpu-quick model{' (smoke: tiny)' if args.smoke else ''}: {rate:.0f} train images/s on random data"
    )

    rows = []
    for minutes in budgets:
        epochs, per_epoch = plan(60 * minutes, rate, batch)
        with tempfile.TemporaryDirectory() as out:
            config = preset_config(
                "cpu-quick", out=out, datapath=args.datapath, epochs=epochs, train_limit=per_epoch,
                test_limit=test_limit, warmup_epochs=0.1 * epochs, model_overrides=overrides, progress="off",
            )  # fmt: skip
            result = train(config)
        train_s = sum(r["seconds"] for r in result["history"])
        rows.append(
            [f"{minutes:g}", f"{epochs} x {per_epoch:,}", result["step"], f"{train_s / 60:.1f}",
             f"{100 * result['test_acc']:.2f}", f"{result['train_images_per_s']:.0f}"]
        )  # fmt: skip
    header = [
        "budget (min)",
        "epochs x images",
        "steps",
        "wall incl. eval (min)",
        "test acc (%)",
        "images/s",
    ]
    notes = (
        f"cpu-quick{' with a tiny model (smoke)' if args.smoke else ''}; {rate:.0f} images/s on random "
        f"data before the runs; test set {test_limit or 10_000} images; load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end (shared machine: timings are noisy)"
    )
    title = "train_cpu: cpu-quick time-to-accuracy" + (" SMOKE" if args.smoke else "")
    record(title, markdown_table(header, rows), Path(args.results), notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
