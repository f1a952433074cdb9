"""What each ingredient of the ``cpu-quick`` model buys, measured at equal wall time (notebook 07).

Every variant changes one thing of the ``cpu-quick`` preset (``VARIANTS``), and every run of it
gets the same minutes: it trains with ``TrainConfig.time_budget`` (start-up included, the
preset's schedule following the clock) in epochs of ``EPOCH_IMAGES`` fresh random training
images, each followed by an evaluation of ``CURVE_TEST_IMAGES`` test images (the learning curve);
its final weights are then measured on all 10,000 test images, for which ``common.FINAL_EVAL_S``
of the minutes are kept. A faster variant therefore sees more images: the comparison is at equal
time, not equal steps. Results go to two CSV files, one row per run and one row per epoch.

    python bench/ablations.py                          # 5.5 minutes x 9 variants x 2 seeds, ~2 h
    python bench/ablations.py --variants "full model" "no augmentation" --seeds 0 1 2
    python bench/ablations.py --tiny --out /tmp/abl    # seconds: checks that it works

Writes ``ablations.csv`` and ``ablation_curves.csv`` to ``--out`` (default: ``bench/results/``,
which notebook 07 reads), skipping runs already there, so the same command continues an
interrupted invocation; appends the summary table to bench/RESULTS.md. Run nothing else
meanwhile: other work takes training images from a run's minutes. The runs in bench/results/
were measured by the earlier harness, which planned each variant's epochs from a short
calibration (commit 0478672).

Notebook 07 and the tests import this file with bench/ on ``sys.path``, the way the bench scripts
import ``common``; it imports ``resnet``, which adds the ResNet-20 variant's model to vitlib's
registry.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import resnet  # noqa: F401 (registers the ResNet-20 baseline as "resnet20_cifar10" in vitlib)
from common import (
    CURVE_TEST_IMAGES,
    REPO,
    add_data_and_results_arguments,
    final_accuracy,
    final_eval_reserve_s,
    markdown_table,
    record,
    train_images_per_s,
)

from vitlib.config import TEST_SIZE, preset_config
from vitlib.model import create_model
from vitlib.summary import count_parameters
from vitlib.train import train

# name -> TrainConfig overrides of the cpu-quick preset; the first is the model as it is.
VARIANTS: dict[str, dict] = {
    "full model": {},
    "no relative position bias": {"model_overrides": {"relative_position": False}},
    "no absolute position embedding": {"model_overrides": {"absolute_position": False}},
    "no position information": {
        "model_overrides": {"relative_position": False, "absolute_position": False}
    },
    "residual gains start at 1": {"model_overrides": {"gain_init": 1.0}},
    "patch stem (the seed's)": {"model_overrides": {"stem": "patch"}},
    "1x1 projections (the seed's)": {"model_overrides": {"projection": "pointwise"}},
    "no augmentation": {"augment": "none"},
    "ResNet-20 (a CNN)": {"model": "resnet20_cifar10"},
}
EPOCH_IMAGES = 10_000  # at most a fresh random fifth of the training set per epoch: a curve point
# --tiny: seconds per run, to check that the pipeline works (CI runs notebook 07 this way).
TINY = {
    "model_overrides": {"depth": 1, "dim": 32, "head_channels": 16},
    "resnet_overrides": {"depth": 8, "width": 4},
    "epoch_images": 512,
    "test_images": 200,
}
RUN_COLUMNS = ["variant", "seed", "budget_min", "epochs", "epoch_images", "steps", "parameters",
               "train_images_per_s", "wall_s", "test_acc"]  # fmt: skip
CURVE_COLUMNS = ["variant", "seed", "epoch", "images_seen", "wall_s", "train_loss", "test_acc"]


def results_dir() -> Path:
    """Where the committed results live: ``bench/results/``."""
    return Path(__file__).resolve().with_name("results")


def variant_config(name: str, tiny: bool = False, **overrides):
    """The ``cpu-quick`` config of variant ``name`` with ``overrides`` (not validated yet)."""
    variant = {**VARIANTS[name]}
    if tiny:
        resnet = variant.get("model") == "resnet20_cifar10"
        model = TINY["resnet_overrides" if resnet else "model_overrides"]
        variant["model_overrides"] = {**model, **variant.get("model_overrides", {})}
        overrides = {"compile": False, **overrides}
    return preset_config("cpu-quick", progress_bar="off", **variant, **overrides)


def run_variant(name: str, minutes: float, seeds: list[int], datapath: str | None = None,
                tiny: bool = False) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """Train variant ``name`` once per seed against a clock of ``minutes`` (less the final
    evaluation's reserve) and measure its final weights on all test images: (one row per run,
    one row per epoch), with ``RUN_COLUMNS`` and ``CURVE_COLUMNS``."""
    epoch_images = TINY["epoch_images"] if tiny else EPOCH_IMAGES
    test_images = TINY["test_images"] if tiny else TEST_SIZE
    budget = minutes - final_eval_reserve_s(test_images) / 60
    runs, curves = [], []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as out:
            config = variant_config(name, tiny, out=out, seed=seed, time_budget=budget,
                                    epoch_images=epoch_images, datapath=datapath,
                                    test_limit=min(CURVE_TEST_IMAGES, test_images))  # fmt: skip
            start = time.perf_counter()
            history = train(config)["history"]
            train_wall = time.perf_counter() - start
            test_acc = final_accuracy(Path(out), datapath, test_images)
            wall = time.perf_counter() - start
        elapsed = train_wall - sum(epoch["seconds"] for epoch in history)  # start-up
        for epoch in history:
            elapsed += epoch["seconds"]
            curves.append({"variant": name, "seed": seed, "epoch": epoch["epoch"],
                           "images_seen": epoch["step"] * config.batch_size,
                           "wall_s": round(elapsed, 1), "train_loss": round(epoch["train_loss"], 4),
                           "test_acc": round(epoch["test_acc"], 4)})  # fmt: skip
        last = history[-1]
        model = create_model(config.model, **config.model_overrides)
        runs.append({"variant": name, "seed": seed, "budget_min": minutes, "epochs": last["epoch"],
                     "epoch_images": epoch_images, "steps": last["step"],
                     "parameters": count_parameters(model),
                     "train_images_per_s": round(train_images_per_s(history, config.batch_size)),
                     "wall_s": round(wall, 1), "test_acc": round(test_acc, 4)})  # fmt: skip
        print(f"{name}, seed {seed}: {100 * test_acc:.2f}% in {wall / 60:.1f} min "
              f"({last['step'] * config.batch_size:,} images)", flush=True)  # fmt: skip
    return runs, curves


def read_csv(path: str | Path) -> list[dict]:
    """Rows of a results CSV, numbers as floats (``variant`` stays text)."""
    with open(path, newline="") as f:
        return [{k: v if k == "variant" else float(v) for k, v in row.items()}
                for row in csv.DictReader(f)]  # fmt: skip


def _append(path: Path, columns: list[str], rows: list[dict]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def run_ablations(minutes: float, seeds: list[int], folder: str | Path,
                  variants: list[str] | None = None, datapath: str | None = None,
                  tiny: bool = False) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """Run ``variants`` (default: all of ``VARIANTS``) for ``seeds`` at ``minutes`` each,
    appending to ``folder/ablations.csv`` and ``folder/ablation_curves.csv`` after each variant;
    runs already in ``ablations.csv`` are skipped. Returns all rows of both files."""
    least = final_eval_reserve_s(TINY["test_images"] if tiny else TEST_SIZE) / 60
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > least:
        raise ValueError(f"minutes={minutes!r}: expected a number of minutes > {least:.3g} (the "
                         "time kept for the final evaluation), e.g. 5")  # fmt: skip
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds={seeds!r}: expected a non-empty list of integers, e.g. [0, 1]")
    for name in variants or []:
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}: choose from {list(VARIANTS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    runs_path, curves_path = folder / "ablations.csv", folder / "ablation_curves.csv"
    for name in variants or list(VARIANTS):
        done = {int(r["seed"]) for r in read_csv(runs_path) if r["variant"] == name} \
            if runs_path.exists() else set()  # fmt: skip
        todo = [seed for seed in seeds if seed not in done]
        if todo:
            runs, curves = run_variant(name, minutes, todo, datapath, tiny)
            _append(curves_path, CURVE_COLUMNS, curves)
            _append(runs_path, RUN_COLUMNS, runs)
    return read_csv(runs_path), read_csv(curves_path)


def summarize(runs: list[dict]) -> list[dict]:
    """One row per variant, in ``VARIANTS`` order: mean, lowest and highest test accuracy over its
    seeds, the difference of the mean from the first variant's (the full model's), the training
    images each run saw, and the mean wall time."""
    batch_size = preset_config("cpu-quick").batch_size  # every variant's
    table = []
    for name in [name for name in VARIANTS if any(r["variant"] == name for r in runs)]:
        own = [r for r in runs if r["variant"] == name]
        accs = [r["test_acc"] for r in own]
        mean = statistics.fmean(accs)
        table.append({"variant": name, "seeds": len(accs), "mean": mean, "low": min(accs),
                      "high": max(accs), "vs full": mean - (table[0]["mean"] if table else mean),
                      "images": statistics.fmean(r["steps"] * batch_size for r in own),
                      "wall_min": statistics.fmean(r["wall_s"] for r in own) / 60})  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--minutes", type=float, default=5.5,
                        help="wall time per run, final evaluation included (default 5.5, as the "
                        "stored results)")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="default: 0 1")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), metavar="NAME",
                        help=f"default: all of {list(VARIANTS)}")  # fmt: skip
    parser.add_argument("--out", type=Path, default=results_dir(),
                        help="folder of the two CSV files (default: bench/results)")  # fmt: skip
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny model, not compiled, 200 test images: seconds per run")  # fmt: skip
    add_data_and_results_arguments(parser)
    args = parser.parse_args(argv)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    runs, _ = run_ablations(args.minutes, args.seeds, args.out, args.variants, args.datapath,
                            args.tiny)  # fmt: skip
    rows = [[r["variant"], r["seeds"], f"{100 * r['mean']:.2f}",
             f"{100 * r['low']:.2f} - {100 * r['high']:.2f}", f"{100 * r['vs full']:+.2f}",
             f"{r['images']:,.0f}", f"{r['wall_min']:.1f}"] for r in summarize(runs)]  # fmt: skip
    header = ["variant", "seeds", "test acc mean (%)", "lowest - highest (%)", "vs full (points)",
              "images seen per run", "wall per run (min)"]  # fmt: skip
    out = args.out.resolve()
    shown = out.relative_to(REPO) if out.is_relative_to(REPO) else args.out
    reserve = final_eval_reserve_s(TINY["test_images"] if args.tiny else TEST_SIZE)
    notes = (
        f"{'TINY model; ' if args.tiny else ''}cpu-quick variants at {args.minutes:g} min each "
        f"(time_budget, {reserve:g} s of them kept for the final evaluation), all runs in "
        f"{shown / 'ablations.csv'} (this and earlier invocations); final weights on "
        f"{'200' if args.tiny else 'all 10,000'} test images; load average {load} before, "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} at the end"
    )
    record("ablations" + (" TINY" if args.tiny else ""), markdown_table(header, rows),
           args.results, notes)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
