"""Time-to-accuracy on this CPU: the cpu-quick preset (and variants of it) against a clock.

Each run trains with ``time_budget``: the preset's learning-rate schedule follows the clock, so
warmup and cosine stretch over the budget however fast the machine runs, and training stops when
it is used. Its whole wall time counts: start-up (data, model, compilation), training, an
evaluation of 2,000 test images after each epoch of all 50,000 training images (the learning
curve; the last epoch ends where the time does), and the evaluation of the final weights on all
10,000 test images, for which ``common.FINAL_EVAL_S`` of the budget are kept. The "flip TTA"
columns add one more evaluation of them, with the mirror image, after the budget.

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
import os
import sys
import tempfile
import time
from pathlib import Path

from common import (
    CURVE_TEST_IMAGES,
    add_data_and_results_arguments,
    final_accuracy,
    final_eval_reserve_s,
    markdown_table,
    record,
    train_images_per_s,
)

from vitlib.config import TEST_SIZE, TRAIN_SIZE, preset_config
from vitlib.train import train

SMOKE_MODEL = {"depth": 1, "dim": 32, "head_channels": 16}


def run_row(minutes: float, name: str, overrides: dict, test_images: int, datapath) -> list:
    """Train one variant against a ``minutes`` budget and evaluate it; one table row."""
    curve_images = min(CURVE_TEST_IMAGES, test_images)
    budget = minutes - final_eval_reserve_s(test_images) / 60
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        config = preset_config(
            "cpu-quick", out=out, time_budget=budget, datapath=datapath, test_limit=curve_images,
            progress_bar="off", **overrides,
        )  # fmt: skip
        history = train(config)["history"]
        accuracy = final_accuracy(Path(out), datapath, test_images)
        wall = time.perf_counter() - start
        tta = final_accuracy(Path(out), datapath, test_images, tta=True)
        wall_tta = time.perf_counter() - start
    steps = history[-1]["step"]
    images = steps * config.batch_size
    print(f"{name}: {100 * accuracy:.2f}% in {wall / 60:.1f} min, {100 * tta:.2f}% with flip TTA "
          f"in {wall_tta / 60:.1f} min", flush=True)  # fmt: skip
    return [
        f"{minutes:g}", name, f"{images / TRAIN_SIZE:.1f} ({images:,})", steps,
        f"{wall / 60:.1f}", f"{100 * accuracy:.2f}", f"{wall_tta / 60:.1f}", f"{100 * tta:.2f}",
        f"{train_images_per_s(history, config.batch_size):.0f}",
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
    add_data_and_results_arguments(parser)
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
    header = ["budget (min)", "variant", "epochs (images)", "steps", "wall (min)", "test acc (%)",
              "wall with flip TTA (min)", "flip TTA acc (%)", "train images/s"]  # fmt: skip
    notes = (
        f"cpu-quick{' with a tiny model (smoke)' if args.smoke else ''}; variants: "
        + "; ".join(f"{name} = {json.dumps(o) if o else 'the preset'}" for name, o in variants)
        + f"; time_budget = the budget less {final_eval_reserve_s(test_images):g} s kept "
        f"for the final evaluation; final weights on {test_images:,} test images "
        f"({CURVE_TEST_IMAGES:,} after each epoch); load average {load} before, "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end"
    )
    title = "train_cpu: time-to-accuracy" + (" SMOKE" if args.smoke else "")
    record(title, markdown_table(header, rows), args.results, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
