"""Time-to-accuracy on this CPU: the cpu-quick preset (and variants of it) against a clock.

For each time budget and each variant, the run is planned to fit and its whole wall time counts:
start-up (data, model, compilation), training, one test-set evaluation per epoch and, for the
"flip TTA" column, one more evaluation of the final weights with the mirror image. A short
calibration run of each variant first measures its training speed and evaluation time on real
data; the run then fills the budget (``vitlib.budget.plan``): the fewest epochs of at most
50,000 training images that use the time, each epoch a fresh random subset when it is shorter
than the training set, with the preset's warmup + cosine fitted to that length. Test accuracy is measured on all 10,000 test images, of the final weights.

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

from common import add_data_and_results_arguments, markdown_table, record

from vitlib.budget import calibrate, final_accuracy, plan, timed_train
from vitlib.config import TEST_SIZE, preset_config

SMOKE_MODEL = {"depth": 1, "dim": 32, "head_channels": 16}


def run_row(minutes: float, name: str, overrides: dict, test_images: int, datapath) -> list:
    """Calibrate, plan and run one variant against a ``minutes`` budget; one table row."""
    common = dict(datapath=datapath, test_limit=test_images, progress="off", **overrides)
    costs = calibrate(preset_config("cpu-quick", **common))
    batch = preset_config("cpu-quick", **common).batch_size
    epochs, per_epoch = plan(60 * minutes, costs, batch, final_eval_s=2 * costs.eval_s)  # TTA: 2x
    print(f"{name}: {costs.train_images_per_s:.0f} train images/s, {costs.eval_s:.1f} s per "
          f"evaluation, {costs.startup_s:.1f} s start-up: {epochs} x {per_epoch:,} images",
          flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        config = preset_config(
            "cpu-quick", out=out, epochs=epochs, epoch_images=per_epoch, **common
        )
        result, wall = timed_train(config)
        tta = final_accuracy(Path(out), datapath, test_images, tta=True)
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
    header = ["budget (min)", "variant", "epochs x images", "steps", "wall (min)", "test acc (%)",
              "wall with flip TTA (min)", "flip TTA acc (%)", "train images/s"]  # fmt: skip
    notes = (
        f"cpu-quick{' with a tiny model (smoke)' if args.smoke else ''}; variants: "
        + "; ".join(f"{name} = {json.dumps(o) if o else 'the preset'}" for name, o in variants)
        + f"; test set {test_images:,} images, final weights; load average {load} before, "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end"
    )
    title = "train_cpu: time-to-accuracy" + (" SMOKE" if args.smoke else "")
    record(title, markdown_table(header, rows), args.results, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
