"""What each ingredient of the ``cpu-quick`` model buys, measured at an equal number of training
images (notebook 07).

Every variant changes one thing of the ``cpu-quick`` preset (``VARIANTS``) and every run trains on
the same ``IMAGES`` training images: ``EPOCHS`` epochs of ``EPOCH_IMAGES`` fresh random images,
each followed by an evaluation of ``CURVE_TEST_IMAGES`` test images (the learning curve), with
the preset's warmup + cosine fitted to that length. The final weights are then measured on all
10,000 test images. An equal number of images is machine-independent: the accuracies do not
depend on how fast this machine was, or on what else ran beside the runs. What each image costs
is measured separately (``--speed``: a short compiled run of every variant, interleaved over
rounds), which turns the images into minutes for an equal-time reading.

The runs are interleaved in blocks: block ``b`` trains every variant once with seed ``b``, the
order rotated from block to block, so that a drift of the machine does not line up with a variant,
and the full model is in every block.

    python bench/ablations.py                          # 8 variants x 3 seeds, 75-95 min on 2 cores
    python bench/ablations.py --speed                  # images/s of every variant, 6 rounds, ~15 min
    python bench/ablations.py --tiny --out /tmp/abl    # seconds: checks that it works

Writes ``ablations.csv`` (one row per run), ``ablation_curves.csv`` (one row per epoch) and
``ablation_speed.csv`` to ``--out`` (default: ``bench/results/``, which notebook 07 reads). Runs
already there are skipped, so the same command continues an interrupted invocation. Appends a
summary to bench/RESULTS.md.

Notebook 07 and the tests import this file with bench/ on ``sys.path``, the way the bench scripts
import ``common``. Importing it registers in vitlib's model registry the models that only the
ablations need: ResNet-20 (``resnet.py``) and two variants of ``vit_cifar10_small``
(``vit_variants.py``).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import resnet  # noqa: F401 (registers the ResNet-20 baseline as "resnet20_cifar10" in vitlib)
import vit_variants  # noqa: F401 (registers the circular-padding and ViT-init models)
from common import (
    CURVE_TEST_IMAGES,
    REPO,
    add_data_and_results_arguments,
    final_accuracy,
    markdown_table,
    record,
)

from vitlib.config import TEST_SIZE, preset_config
from vitlib.model import create_model
from vitlib.summary import count_parameters
from vitlib.train import train

NO_POSITION = {"relative_position": False, "absolute_position": False}
# name -> TrainConfig overrides of the cpu-quick preset; the first is the model as it ships.
VARIANTS: dict[str, dict] = {
    "full model": {},
    "no position embedding or bias": {"model_overrides": NO_POSITION},
    "no position, circular padding": {"model": "vit_cifar10_small_circular_padding",
                                      "model_overrides": NO_POSITION},  # fmt: skip
    "gains start at 1, Kaiming init": {"model_overrides": {"gain_init": 1.0}},
    "gains start at 1, ViT init": {"model": "vit_cifar10_small_plain_init",
                                   "model_overrides": {"gain_init": 1.0}},  # fmt: skip
    "no augmentation": {"augment": "none"},
    "ResNet-20, the ViT's recipe": {"model": "resnet20_cifar10"},
    # A CNN's own recipe: SGD with momentum 0.9 and lr 0.1 (He et al. 2016), weight decay 5e-4 (as
    # in most CIFAR code; He et al.: 1e-4), no label smoothing; flips, crops, warmup + cosine.
    "ResNet-20, SGD recipe": {"model": "resnet20_cifar10", "optimizer": "sgd", "lr": 0.1,
                              "weight_decay": 5e-4, "label_smoothing": 0.0},  # fmt: skip
}
EPOCHS, EPOCH_IMAGES = 10, 6_400  # 64,000 training images (500 steps) per run: 1.3 passes
SPEED_EPOCHS, SPEED_IMAGES = 3, 20 * 128  # --speed: 3 epochs of 20 steps; the first warms up
SEEDS = (0, 1, 2)
BATCH = preset_config("cpu-quick").batch_size  # every variant's
# --tiny: seconds per run, to check that the pipeline works (CI runs notebook 07 this way).
TINY = {
    "model_overrides": {"depth": 1, "dim": 32, "head_channels": 16},
    "resnet_overrides": {"depth": 8, "width": 4},
    "epochs": 2,
    "epoch_images": 256,
    "test_images": 200,
}
RUN_COLUMNS = ["variant", "seed", "block", "position", "epochs", "epoch_images", "steps",
               "parameters", "train_images_per_s", "wall_s", "load", "test_acc"]  # fmt: skip
CURVE_COLUMNS = ["variant", "seed", "epoch", "images_seen", "wall_s", "train_loss", "test_acc"]
SPEED_COLUMNS = ["variant", "round", "position", "train_images_per_s", "load"]


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


def block_order(block: int) -> list[str]:
    """The variants in the order block ``block`` trains them: ``VARIANTS`` rotated by 3 places per
    block, so each block starts elsewhere (the full model comes 1st, 6th, 3rd, ...)."""
    names = list(VARIANTS)
    shift = 3 * block % len(names)
    return names[shift:] + names[:shift]


def load() -> float:
    """The 1-minute load average (0 where the system has none, e.g. Windows)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def run_once(name: str, seed: int, datapath: str | None = None,
             tiny: bool = False) -> tuple[dict, list[dict]]:  # fmt: skip
    """Train variant ``name`` with ``seed`` on the equal image budget and measure its final
    weights on all test images: (its row, one row per epoch), with ``RUN_COLUMNS`` (less block
    and position) and ``CURVE_COLUMNS``."""
    epochs = TINY["epochs"] if tiny else EPOCHS
    epoch_images = TINY["epoch_images"] if tiny else EPOCH_IMAGES
    test_images = TINY["test_images"] if tiny else TEST_SIZE
    before = load()
    with tempfile.TemporaryDirectory() as out:
        config = variant_config(name, tiny, out=out, seed=seed, epochs=epochs,
                                epoch_images=epoch_images, datapath=datapath,
                                test_limit=min(CURVE_TEST_IMAGES, test_images))  # fmt: skip
        start = time.perf_counter()
        history = train(config)["history"]
        train_wall = time.perf_counter() - start
        test_acc = final_accuracy(Path(out), datapath, test_images)
        wall = time.perf_counter() - start
    curves, elapsed = [], train_wall - sum(epoch["seconds"] for epoch in history)  # start-up
    for epoch in history:
        elapsed += epoch["seconds"]
        curves.append({"variant": name, "seed": seed, "epoch": epoch["epoch"],
                       "images_seen": epoch["step"] * config.batch_size,
                       "wall_s": round(elapsed, 1), "train_loss": round(epoch["train_loss"], 4),
                       "test_acc": round(epoch["test_acc"], 4)})  # fmt: skip
    steps = history[-1]["step"]
    run = {"variant": name, "seed": seed, "epochs": epochs, "epoch_images": epoch_images,
           "steps": steps, "parameters": count_parameters(create_model(config.model,
                                                                      **config.model_overrides)),
           "train_images_per_s": round(statistics.median(e["train_images_per_s"] for e in history)),
           "wall_s": round(wall, 1), "load": round(before, 2), "test_acc": round(test_acc, 4)}  # fmt: skip
    print(f"{name}, seed {seed}: {100 * test_acc:.2f}% after {steps * config.batch_size:,} images "
          f"in {wall / 60:.1f} min", flush=True)  # fmt: skip
    return run, curves


def measure_speed(name: str, datapath: str | None = None, tiny: bool = False) -> float:
    """Training images per second of variant ``name`` as the runs train it (compiled, bf16):
    the median of its epochs after the first, each ``SPEED_IMAGES`` images."""
    with tempfile.TemporaryDirectory() as out:
        config = variant_config(name, tiny, out=out, epochs=SPEED_EPOCHS, datapath=datapath,
                                epoch_images=SPEED_IMAGES, test_limit=256)  # fmt: skip
        history = train(config)["history"]
    return statistics.median(epoch["train_images_per_s"] for epoch in history[1:])


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


def _check(seeds: list[int], variants: list[str] | None) -> None:
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                            for s in seeds):  # fmt: skip
        raise ValueError(f"seeds={seeds!r}: expected a non-empty list of integers >= 0, e.g. "
                         "[0, 1, 2]")  # fmt: skip
    for name in variants or []:
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}: choose from {list(VARIANTS)}")


def _pending(path: Path, block_column: str, blocks: range | list[int],
             variants: list[str] | None = None):  # fmt: skip
    """(block, position, variant) of every run of ``blocks``, each in ``block_order(block)``, that
    the CSV file ``path`` does not hold yet (its ``block_column`` names the block)."""
    done = {(r["variant"], int(r[block_column])) for r in read_csv(path)} if path.exists() else set()
    for block in blocks:
        for position, name in enumerate(block_order(block)):
            if (not variants or name in variants) and (name, block) not in done:
                yield block, position, name


def run_ablations(seeds: list[int], folder: str | Path, variants: list[str] | None = None,
                  datapath: str | None = None,
                  tiny: bool = False) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """Train ``variants`` (default: all) once per seed, block by block (seed ``b`` is block ``b``,
    in ``block_order(b)``), appending each run to ``folder/ablations.csv`` and
    ``folder/ablation_curves.csv`` when it ends; runs already in ``ablations.csv`` are skipped.
    Returns all rows of both files."""
    _check(seeds, variants)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    runs_path, curves_path = folder / "ablations.csv", folder / "ablation_curves.csv"
    for seed, position, name in _pending(runs_path, "seed", seeds, variants):
        run, curves = run_once(name, seed, datapath, tiny)
        _append(curves_path, CURVE_COLUMNS, curves)
        _append(runs_path, RUN_COLUMNS, [{**run, "block": seed, "position": position}])
    return read_csv(runs_path), read_csv(curves_path)


def run_speed(rounds: int, folder: str | Path, datapath: str | None = None,
              tiny: bool = False) -> list[dict]:  # fmt: skip
    """``measure_speed`` of every variant, ``rounds`` times, interleaved (round ``r`` in
    ``block_order(r)``), appended to ``folder/ablation_speed.csv``; rounds already there are
    skipped. Returns all its rows."""
    path = Path(folder) / "ablation_speed.csv"
    Path(folder).mkdir(parents=True, exist_ok=True)
    for r, position, name in _pending(path, "round", range(rounds)):
        before = load()
        speed = measure_speed(name, datapath, tiny)
        print(f"{name}, round {r}: {speed:.0f} training images/s", flush=True)
        _append(path, SPEED_COLUMNS, [{"variant": name, "round": r, "position": position,
                                       "train_images_per_s": round(speed),
                                       "load": round(before, 2)}])  # fmt: skip
    return read_csv(path)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``p`` > 0.5): the
    density integrated by Simpson's rule, the quantile found by bisection."""

    def cdf(t: float, steps: int = 2_000) -> float:  # P(T <= t) for t >= 0
        c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
        f = [math.exp(c - (df + 1) / 2 * math.log1p((t * k / steps) ** 2 / df))
             for k in range(steps + 1)]  # fmt: skip
        simpson = f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2])
        return 0.5 + simpson * t / steps / 3

    low, high = 0.0, 100.0
    for _ in range(60):
        low, high = (low, (low + high) / 2) if cdf((low + high) / 2) > p else ((low + high) / 2, high)
    return (low + high) / 2


def summarize(runs: list[dict], speed: list[dict] | None = None, level: float = 0.95) -> list[dict]:
    """One row per variant, in ``VARIANTS`` order: its seeds, mean and standard deviation of test
    accuracy, the difference ``d`` of the mean from the full model's with its standard error
    ``se`` and ``t = d / se``, the pooled seed sd, and the verdict of the rule of notebook 07:

        s_pooled^2 = sum over variants of sum (acc - variant mean)^2 / sum (seeds - 1)
        se = s_pooled * sqrt(1 / n_variant + 1 / n_full)
        "better" if d > t_q * se, "worse" if d < -t_q * se, else "not shown"

    with ``t_q`` the ``(1 + level) / 2`` quantile of Student's t on the pooled degrees of freedom
    (a two-sided test at ``1 - level``). With ``speed`` (rows of ``ablation_speed.csv``), also the
    median training images/s and the minutes the run's images take at that speed."""
    names = [name for name in VARIANTS if any(r["variant"] == name for r in runs)]
    accs = {name: [r["test_acc"] for r in runs if r["variant"] == name] for name in names}
    df = sum(len(a) - 1 for a in accs.values())
    pooled = math.sqrt(sum((x - statistics.fmean(a)) ** 2 for a in accs.values() for x in a) / df) \
        if df else math.nan  # fmt: skip
    t_q = t_quantile((1 + level) / 2, df) if df else math.nan
    full = statistics.fmean(accs[names[0]])
    table = []
    for name in names:
        own, mean = [r for r in runs if r["variant"] == name], statistics.fmean(accs[name])
        d, se = mean - full, pooled * math.sqrt(1 / len(accs[name]) + 1 / len(accs[names[0]]))
        verdict = "better" if d > t_q * se else "worse" if d < -t_q * se else "not shown"
        row = {"variant": name, "seeds": len(own), "mean": mean,
               "sd": statistics.stdev(accs[name]) if len(own) > 1 else math.nan,
               "vs full": d, "se": se, "t": d / se if se else math.nan, "t_q": t_q, "df": df,
               "pooled_sd": pooled,
               "verdict": "-" if name == names[0] else verdict,
               "images": statistics.fmean(r["steps"] for r in own) * BATCH}  # fmt: skip
        rates = [s["train_images_per_s"] for s in speed or [] if s["variant"] == name]
        if rates:
            row["images_per_s"] = statistics.median(rates)
            row["minutes"] = row["images"] / row["images_per_s"] / 60
        table.append(row)
    return table


def format_table(table: list[dict]) -> list[list[str]]:
    """``summarize``'s rows as text cells, percentages in points (the header: ``HEADER``)."""
    return [[r["variant"], f"{r['seeds']}", f"{100 * r['mean']:.2f} ± {100 * r['sd']:.2f}",
             "-" if not i else f"{100 * r['vs full']:+.2f} ± {100 * r['se']:.2f}",
             "-" if not i else f"{r['t']:+.1f}", r["verdict"], f"{r['images']:,.0f}",
             f"{r['images_per_s']:.0f}" if "images_per_s" in r else "-",
             f"{r['minutes']:.1f}" if "minutes" in r else "-"]
            for i, r in enumerate(table)]  # fmt: skip


HEADER = ["variant", "seeds", "test acc % (mean ± sd)", "vs full (d ± se)", "t = d/se",
          "verdict", "images per run", "images/s", "minutes at that speed"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        help="one block of runs per seed (default: 0 1 2)")  # fmt: skip
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), metavar="NAME",
                        help=f"default: all of {list(VARIANTS)}")  # fmt: skip
    parser.add_argument("--speed", type=int, nargs="?", const=6, default=0, metavar="ROUNDS",
                        help="measure every variant's images/s instead, in ROUNDS interleaved "
                        "rounds (default 6)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=results_dir(),
                        help="folder of the CSV files (default: bench/results)")  # fmt: skip
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny model, not compiled, 200 test images: seconds per run")  # fmt: skip
    add_data_and_results_arguments(parser)
    args = parser.parse_args(argv)
    before = load()
    if args.speed:
        run_speed(args.speed, args.out, args.datapath, args.tiny)
    else:
        run_ablations(args.seeds, args.out, args.variants, args.datapath, args.tiny)
    runs = read_csv(args.out / "ablations.csv") if (args.out / "ablations.csv").exists() else []
    speed_path = args.out / "ablation_speed.csv"
    speed = read_csv(speed_path) if speed_path.exists() else None
    out = args.out.resolve()
    shown = out.relative_to(REPO) if out.is_relative_to(REPO) else args.out
    notes = (
        f"{'TINY model; ' if args.tiny else ''}cpu-quick variants, each run "
        f"{(TINY['epochs'] * TINY['epoch_images']) if args.tiny else EPOCHS * EPOCH_IMAGES:,} "
        f"training images; all runs in {shown} (this and earlier invocations); final weights on "
        f"{TINY['test_images'] if args.tiny else TEST_SIZE:,} test images; verdicts at 95% "
        f"(bench/ablations.py summarize); load average {before:.2f} before, {load():.2f} at the end"
    )
    if runs:
        record("ablations" + (" TINY" if args.tiny else ""),
               markdown_table(HEADER, format_table(summarize(runs, speed))), args.results, notes)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
