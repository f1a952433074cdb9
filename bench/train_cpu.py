"""Time-to-accuracy on this CPU: the cpu-quick preset (and variants of it) against a clock.

For each time budget and each variant, the run is planned to fit and its whole wall time counts:
start-up (data, model, compilation), training, one test-set evaluation per epoch and, for the
"flip TTA" column, one more evaluation of the final weights with the mirror image. A short
calibration run of each variant first measures its training speed and evaluation time on real
data; the run is then the largest number of whole epochs over all 50,000 training images (a new
random order each epoch) that fits in the budget, with the preset's warmup + cosine fitted to
that length. Test accuracy is measured on all 10,000 test images, of the final weights.

    python bench/train_cpu.py --budgets 20 60                   # the cpu-quick preset
    python bench/train_cpu.py --budgets 10 --variant eager compile=false \\
        --variant compiled compile=true                         # one change per row
    python bench/train_cpu.py --smoke                           # seconds: checks that it works

A variant is a name and TrainConfig overrides (KEY=VALUE, values as JSON: compile=true,
label_smoothing=0, model_overrides={"dim":192}). Appends a table to bench/RESULTS.md (or
--results PATH) with date, hardware, versions, command. Timings on a shared machine are noisy:
run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from common import RESULTS, markdown_table, record

from vitlib.config import TEST_SIZE, TRAIN_SIZE, preset_config
from vitlib.data import load_cifar10
from vitlib.evaluate import evaluate_model, load_model
from vitlib.hardware import autocast_dtype
from vitlib.train import train

SMOKE_MODEL = {"depth": 1, "dim": 32, "head_channels": 16}
CALIBRATION_STEPS = 48
MARGIN = 0.03  # plan 97% of the budget: speed drifts between runs by a few percent


@dataclass
class Costs:
    """What a run costs on this machine, measured by :func:`calibrate`."""

    train_images_per_s: float  # the training loop on real, augmented batches
    eval_s: float  # one evaluation of the test set used
    startup_s: float  # loading data, building (and compiling) the model, writing checkpoints


def timed_train(out: str, **overrides) -> tuple[dict, float]:
    """A cpu-quick run in ``out``: (train()'s result, its wall seconds)."""
    start = time.perf_counter()
    result = train(preset_config("cpu-quick", out=out, progress="off", **overrides))
    return result, time.perf_counter() - start


def calibrate(batch_size: int, test_images: int, **overrides) -> Costs:
    """Two short epochs of the real loop (``CALIBRATION_STEPS`` batches each, evaluation on a fifth
    of the test set); the second, warm one gives the rates: the first pays one-off costs (memory
    allocation, kernel selection) that a long run pays once."""
    probe = max(test_images // 5, 1)
    images = CALIBRATION_STEPS * batch_size
    with tempfile.TemporaryDirectory() as out:
        result, wall = timed_train(
            out, epochs=2, train_limit=images, test_limit=probe, warmup_epochs=0.1, **overrides
        )
    warm = result["history"][-1]
    rate = warm["train_images_per_s"]
    eval_s = (warm["seconds"] - images / rate) * test_images / probe
    return Costs(rate, eval_s, wall - sum(epoch["seconds"] for epoch in result["history"]))


def plan(budget_s: float, costs: Costs, batch_size: int, tta: bool) -> tuple[int, int]:
    """(epochs, train images per epoch) whose start-up, training, evaluations (and the final flip
    TTA evaluation) fill ``budget_s`` less ``MARGIN``: whole epochs over all training images, or
    one epoch over the first images that fit when not even one epoch does."""
    train_s = budget_s * (1 - MARGIN) - costs.startup_s - (2 * costs.eval_s if tta else 0)
    epoch_s = TRAIN_SIZE / costs.train_images_per_s + costs.eval_s
    epochs = math.floor(train_s / epoch_s)
    if epochs >= 1:
        return epochs, TRAIN_SIZE
    images = (train_s - costs.eval_s) * costs.train_images_per_s
    return 1, max(batch_size, int(images) // batch_size * batch_size)


def final_tta_accuracy(run_dir: Path, datapath: str | None, test_images: int) -> float:
    """Flip-TTA accuracy of the run's final weights (last.pt) on the first ``test_images``."""
    model, state = load_model(run_dir / "last.pt")
    images, labels = load_cifar10(datapath, "test", limit=test_images)
    dtype = autocast_dtype(state["config"]["precision"], torch.device("cpu"))  # as in training
    return evaluate_model(model, images, labels, tta=True, autocast_dtype=dtype)["accuracy"]


def run_row(minutes: float, name: str, overrides: dict, test_images: int, datapath) -> list:
    """Calibrate, plan and run one variant against a ``minutes`` budget; one table row."""
    batch = preset_config("cpu-quick", **overrides).batch_size
    common = dict(datapath=datapath, **overrides)
    costs = calibrate(batch, test_images, **common)
    epochs, per_epoch = plan(60 * minutes, costs, batch, tta=True)
    print(f"{name}: {costs.train_images_per_s:.0f} train images/s, {costs.eval_s:.1f} s per "
          f"evaluation, {costs.startup_s:.1f} s start-up: {epochs} x {per_epoch:,} images",
          flush=True)  # fmt: skip
    limit = None if per_epoch == TRAIN_SIZE else per_epoch
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result, wall = timed_train(out, epochs=epochs, train_limit=limit, test_limit=test_images,
                                   **common)  # fmt: skip
        tta = final_tta_accuracy(Path(out), datapath, test_images)
        wall_tta = time.perf_counter() - start
    return [
        f"{minutes:g}", name, f"{epochs} x {per_epoch:,}", result["step"], f"{wall / 60:.1f}",
        f"{100 * result['test_acc']:.2f}", f"{wall_tta / 60:.1f}", f"{100 * tta:.2f}",
        f"{result['train_images_per_s']:.0f}",
    ]  # fmt: skip


def parse_variant(words: list[str]) -> tuple[str, dict]:
    """``["name", "key=value", ...]`` -> (name, overrides); values are JSON where they parse."""
    overrides = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep:
            raise SystemExit(f"--variant {words[0]}: expected KEY=VALUE, got {word!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return words[0], overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--budgets", type=float, nargs="+", default=[20, 60],
                        help="minutes of wall time per run (default: 20 60)")  # fmt: skip
    parser.add_argument("--variant", nargs="+", action="append", metavar=("NAME", "KEY=VALUE"),
                        help="a row: a name and cpu-quick overrides (default: cpu-quick as is)")  # fmt: skip
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds with a tiny model, not compiled")  # fmt: skip
    parser.add_argument("--results", default=str(RESULTS), help="markdown file to append to")
    parser.add_argument("--datapath", default=None,
                        help="folder holding cifar-10-batches-py/ (default: $VITLIB_DATA)")  # fmt: skip
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant or [["cpu-quick"]]]
    if args.smoke:
        variants = [
            (name, {**o, "model_overrides": SMOKE_MODEL, "compile": False}) for name, o in variants
        ]
    budgets = [0.05] if args.smoke else args.budgets
    test_images = 200 if args.smoke else TEST_SIZE
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    rows = [
        run_row(minutes, name, overrides, test_images, args.datapath)
        for minutes in budgets
        for name, overrides in variants
    ]
    header = ["budget (min)", "variant", "epochs x images", "steps", "wall (min)", "test acc (%)",
              "wall with flip TTA (min)", "flip TTA acc (%)", "train images/s"]  # fmt: skip
    notes = (
        f"cpu-quick{' with a tiny model (smoke)' if args.smoke else ''}; variants: "
        + "; ".join(f"{name} = {json.dumps(o) if o else 'the preset'}" for name, o in variants)
        + f"; test set {test_images:,} images, final weights; load average {load} before, "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end"
    )
    title = "train_cpu: time-to-accuracy" + (" SMOKE" if args.smoke else "")
    record(title, markdown_table(header, rows), Path(args.results), notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
