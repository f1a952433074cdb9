"""What each ingredient of the ``cpu-quick`` model buys, measured at equal wall time (notebook 07).

Every variant changes one thing of the ``cpu-quick`` preset (``VARIANTS``). Each gets the same
wall-time budget: a short calibration run measures its speed, ``vitlib.budget.plan`` fills the
budget with a run (epochs of at most ``EPOCH_IMAGES`` fresh random training images, a test-subset
evaluation after each, one final evaluation of all 10,000 test images), and every seed trains
that plan. A faster variant therefore sees more images: the comparison is at equal time, not
equal steps. Results go to two CSV files, one row per run and one row per epoch::

    python bench/ablations.py --minutes 5.5 --seeds 0 1   # about 2 hours on 2 cores

Finished runs are kept: running the same command again continues with the missing ones.
"""

from __future__ import annotations

import csv
import statistics
import tempfile
import time
from importlib import resources
from pathlib import Path

from .budget import (
    CALIBRATION_STEPS,
    CURVE_TEST_IMAGES,
    calibrate,
    final_accuracy,
    plan,
    timed_train,
)
from .config import TEST_SIZE, preset_config
from .model import create_model
from .summary import count_parameters

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
    "calibration_steps": 3,
}
RUN_COLUMNS = ["variant", "seed", "budget_min", "epochs", "epoch_images", "steps", "parameters",
               "train_images_per_s", "wall_s", "test_acc"]  # fmt: skip
CURVE_COLUMNS = ["variant", "seed", "epoch", "images_seen", "wall_s", "train_loss", "test_acc"]


def results_dir() -> Path:
    """Where the committed results live: ``vitlib/reference/`` (package data)."""
    return Path(str(resources.files("vitlib") / "reference"))


def variant_config(name: str, tiny: bool = False, **overrides):
    """The ``cpu-quick`` config of variant ``name`` with ``overrides`` (not validated yet)."""
    variant = {**VARIANTS[name]}
    if tiny:
        resnet = variant.get("model") == "resnet20_cifar10"
        model = TINY["resnet_overrides" if resnet else "model_overrides"]
        variant["model_overrides"] = {**model, **variant.get("model_overrides", {})}
        overrides = {"compile": False, **overrides}
    return preset_config("cpu-quick", progress="off", **variant, **overrides)


def run_variant(name: str, minutes: float, seeds: list[int], datapath: str | None = None,
                tiny: bool = False) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """Calibrate variant ``name``, plan its ``minutes`` budget and train it once per seed:
    (one row per run, one row per epoch), with ``RUN_COLUMNS`` and ``CURVE_COLUMNS``."""
    epoch_images = TINY["epoch_images"] if tiny else EPOCH_IMAGES
    test_images = TINY["test_images"] if tiny else TEST_SIZE
    curve_images = min(CURVE_TEST_IMAGES, test_images)
    common = dict(datapath=datapath, test_limit=curve_images)
    steps = TINY["calibration_steps"] if tiny else CALIBRATION_STEPS
    config = variant_config(name, tiny, **common)
    parameters = count_parameters(create_model(config.model, **config.model_overrides))
    costs = calibrate(config, steps)
    final_eval_s = costs.eval_s * test_images / curve_images
    epochs, per_epoch = plan(60 * minutes, costs, config.batch_size, epoch_images, final_eval_s)
    runs, curves = [], []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            config = variant_config(name, tiny, out=out, seed=seed, epochs=epochs,
                                    epoch_images=per_epoch, **common)  # fmt: skip
            result, train_wall = timed_train(config)
            test_acc = final_accuracy(Path(out), datapath, test_images)
            wall = time.perf_counter() - start
        history = result["history"]
        elapsed = train_wall - sum(epoch["seconds"] for epoch in history)  # start-up
        for epoch in history:
            elapsed += epoch["seconds"]
            curves.append({"variant": name, "seed": seed, "epoch": epoch["epoch"],
                           "images_seen": epoch["epoch"] * per_epoch, "wall_s": round(elapsed, 1),
                           "train_loss": round(epoch["train_loss"], 4),
                           "test_acc": round(epoch["test_acc"], 4)})  # fmt: skip
        runs.append({"variant": name, "seed": seed, "budget_min": minutes, "epochs": epochs,
                     "epoch_images": per_epoch, "steps": result["step"],
                     "parameters": parameters,
                     "train_images_per_s": round(result["train_images_per_s"]),
                     "wall_s": round(wall, 1), "test_acc": round(test_acc, 4)})  # fmt: skip
        print(f"{name}, seed {seed}: {100 * test_acc:.2f}% in {wall / 60:.1f} min "
              f"({epochs} x {per_epoch:,} images)", flush=True)  # fmt: skip
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
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > 0:
        raise ValueError(f"minutes={minutes!r}: expected a number of minutes > 0, e.g. 5")
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
    table = []
    for name in [name for name in VARIANTS if any(r["variant"] == name for r in runs)]:
        own = [r for r in runs if r["variant"] == name]
        accs = [r["test_acc"] for r in own]
        mean = statistics.fmean(accs)
        table.append({"variant": name, "seeds": len(accs), "mean": mean, "low": min(accs),
                      "high": max(accs), "vs full": mean - (table[0]["mean"] if table else mean),
                      "images": statistics.fmean(r["epochs"] * r["epoch_images"] for r in own),
                      "wall_min": statistics.fmean(r["wall_s"] for r in own) / 60})  # fmt: skip
    return table
