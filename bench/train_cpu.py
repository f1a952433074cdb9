"""Time-to-accuracy of the cpu-quick preset on this CPU.

For each time budget (default 5, 10 and 20 minutes of wall time) the run is planned to fit, and
its whole wall time counts: start-up, training and one test-set evaluation per epoch. A short
calibration run first measures the training loop's images/s and the evaluation time on real
data; the images that then fit in the budget are split into whole epochs, and one warmup +
cosine covers exactly that run (the right way to train against a clock). Test accuracy is
measured on the full test set.

    python bench/train_cpu.py                      # 5/10/20 minutes (about 40 minutes in all)
    python bench/train_cpu.py --budgets 2          # one 2-minute run
    python bench/train_cpu.py --smoke              # seconds, tiny model: checks that it works

Appends a table to bench/RESULTS.md (or --results PATH) with date, hardware, versions, command.
Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import RESULTS, markdown_table, record

from vitlib.config import TEST_SIZE, TRAIN_SIZE, preset_config
from vitlib.train import train

SMOKE_MODEL = {"depth": 1, "dim": 32, "head_channels": 16}
CALIBRATION_STEPS = 48
MARGIN = 0.05  # plan 95% of the budget: speed drifts between runs by a few percent


@dataclass
class Costs:
    """What a cpu-quick run costs on this machine, measured by :func:`calibrate`."""

    train_images_per_s: float  # the training loop on real, augmented batches
    eval_s: float  # one evaluation of the test set used
    startup_s: float  # loading data, building the model, writing checkpoints


def timed_train(**overrides) -> tuple[dict, float]:
    """A cpu-quick run in a temporary directory: (train()'s result, its wall seconds)."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = train(preset_config("cpu-quick", out=out, progress="off", **overrides))
        return result, time.perf_counter() - start


def calibrate(batch_size: int, test_images: int, **overrides) -> Costs:
    """Two short epochs of the real loop (``CALIBRATION_STEPS`` batches each, evaluation on a fifth
    of the test set); the second, warm one gives the rates: the first pays one-off costs (memory
    allocation, kernel selection) that a long run pays once."""
    probe = max(test_images // 5, 1)
    images = CALIBRATION_STEPS * batch_size
    result, wall = timed_train(
        epochs=2, train_limit=images, test_limit=probe, warmup_epochs=0.1, **overrides
    )
    warm = result["history"][-1]
    rate = warm["train_images_per_s"]
    eval_s = (warm["seconds"] - images / rate) * test_images / probe
    return Costs(rate, eval_s, wall - sum(epoch["seconds"] for epoch in result["history"]))


def plan(budget_s: float, costs: Costs, batch_size: int) -> tuple[int, int]:
    """(epochs, train images per epoch) whose start-up, training and per-epoch evaluations fill
    ``budget_s`` seconds less ``MARGIN``: the fewest whole epochs that hold the images that fit
    (each epoch uses the first ``images per epoch`` training images)."""
    train_s = budget_s * (1 - MARGIN) - costs.startup_s
    epochs = max(1, math.ceil(train_s * costs.train_images_per_s / TRAIN_SIZE))
    per_epoch = (train_s / epochs - costs.eval_s) * costs.train_images_per_s
    return epochs, min(TRAIN_SIZE, max(batch_size, int(per_epoch) // batch_size * batch_size))


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
    overrides = {"model_overrides": SMOKE_MODEL} if args.smoke else {}
    budgets = [0.05] if args.smoke else args.budgets
    test_images = 200 if args.smoke else TEST_SIZE
    batch = preset_config("cpu-quick").batch_size
    common = dict(datapath=args.datapath, **overrides)
    costs = calibrate(batch, test_images, **common)
    print(
        f"cpu-quick{' (smoke: tiny model)' if args.smoke else ''}: {costs.train_images_per_s:.0f} "
        f"train images/s, {costs.eval_s:.1f} s per evaluation, {costs.startup_s:.1f} s start-up"
    )

    rows = []
    for minutes in budgets:
        epochs, per_epoch = plan(60 * minutes, costs, batch)
        result, wall = timed_train(
            epochs=epochs,
            train_limit=per_epoch,
            test_limit=test_images,
            warmup_epochs=0.1 * epochs,
            **common,
        )
        rows.append(
            [f"{minutes:g}", f"{epochs} x {per_epoch:,}", result["step"], f"{wall / 60:.1f}",
             f"{100 * result['test_acc']:.2f}", f"{result['train_images_per_s']:.0f}"]
        )  # fmt: skip
    header = [
        "budget (min)",
        "epochs x images",
        "steps",
        "wall, all included (min)",
        "test acc (%)",
        "train images/s",
    ]
    notes = (
        f"cpu-quick{' with a tiny model (smoke)' if args.smoke else ''}; calibration: "
        f"{costs.train_images_per_s:.0f} train images/s, {costs.eval_s:.1f} s per evaluation; "
        f"test set {test_images:,} images; load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end (shared machine: timings are noisy)"
    )
    title = "train_cpu: cpu-quick time-to-accuracy" + (" SMOKE" if args.smoke else "")
    record(title, markdown_table(header, rows), Path(args.results), notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
