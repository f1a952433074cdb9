"""Training against a clock: measure what a run costs on this machine, then plan a run that fills
a wall-time budget.

    costs = calibrate(config)                      # a short run of the real loop
    epochs, images = plan(300, costs, config.batch_size)   # 5 minutes, start-up included
    train(preset_config("cpu-quick", epochs=epochs, epoch_images=images))  # schedule fitted

Used by ``vitlib.ablations`` (notebook 07), whose seeds all train one plan. The budget covers
start-up (data, model, compilation), the training epochs and one evaluation per epoch (of
``CURVE_TEST_IMAGES`` test images: a learning curve at a fifth of the cost); a final evaluation
on top, of all 10,000, is the caller's (``final_eval_s``). A plan is only as good as its
calibration: on a machine whose speed drifts, ``TrainConfig.time_budget`` (the schedule on the
clock, as ``bench/train_cpu.py`` runs) fills a budget exactly.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import TEST_SIZE, TRAIN_SIZE, TrainConfig
from .data import load_cifar10
from .evaluate import evaluate_model, load_model
from .hardware import autocast_dtype
from .train import train

CALIBRATION_STEPS = 48
CURVE_TEST_IMAGES = 2_000  # evaluated after every epoch; a final evaluation uses all 10,000
MARGIN = 0.03  # plan 97% of the budget: speed drifts between runs by a few percent


@dataclass
class Costs:
    """What a run costs on this machine, measured by :func:`calibrate`."""

    train_images_per_s: float  # the training loop on real, augmented batches
    eval_s: float  # one evaluation of the test images the run evaluates on
    startup_s: float  # loading data, building (and compiling) the model, writing checkpoints


def timed_train(config: TrainConfig) -> tuple[dict, float]:
    """``train(config)``: (its result, its wall seconds)."""
    start = time.perf_counter()
    result = train(config)
    return result, time.perf_counter() - start


def calibrate(config: TrainConfig, steps: int = CALIBRATION_STEPS) -> Costs:
    """Two short epochs of ``config``'s loop (``steps`` batches each, evaluation on a fifth of its
    test images) in a temporary directory; the second, warm one gives the rates: the first pays
    one-off costs (memory allocation, kernel selection) that a long run pays once.

    A compiled config first runs two epochs of two batches that fill the compile cache, which the
    measured run and the planned run then find filled (a cold compilation takes about a minute on
    2 cores, a cached one seconds)."""
    test_images = config.test_limit or TEST_SIZE
    probe = max(test_images // 5, 1)
    images = steps * config.batch_size
    for measure in [False, True] if config.compile else [True]:
        with tempfile.TemporaryDirectory() as out:
            short = dataclasses.replace(config, out=out, epochs=2,
                                        epoch_images=images if measure else 2 * config.batch_size,
                                        train_limit=None, test_limit=probe, warmup_epochs=0.1,
                                        cycles=1, schedule_unit="step")  # fmt: skip
            result, wall = timed_train(short)
    warm = result["history"][-1]
    rate = warm["train_images_per_s"]
    eval_s = (warm["seconds"] - images / rate) * test_images / probe
    return Costs(rate, eval_s, wall - sum(epoch["seconds"] for epoch in result["history"]))


def plan(
    budget_s: float, costs: Costs, batch_size: int, epoch_images: int = TRAIN_SIZE,
    final_eval_s: float = 0.0,
) -> tuple[int, int]:  # fmt: skip
    """(epochs, images per epoch) that fill ``budget_s`` less ``MARGIN`` with start-up, training,
    an evaluation after every epoch and ``final_eval_s``: the fewest epochs of at most
    ``epoch_images`` images each (whole batches) that use the time. With fewer images per epoch
    than the training set, each epoch is a fresh random subset (``TrainConfig.epoch_images``)."""
    train_s = budget_s * (1 - MARGIN) - costs.startup_s - final_eval_s
    epochs = 1
    while (train_s - epochs * costs.eval_s) * costs.train_images_per_s > epochs * epoch_images:
        epochs += 1
    images = (train_s - epochs * costs.eval_s) * costs.train_images_per_s
    return epochs, max(batch_size, int(images / epochs) // batch_size * batch_size)


def final_accuracy(
    run_dir: Path, datapath: str | None, test_images: int, tta: bool = False
) -> float:
    """Test accuracy of a run's final weights (``run_dir/last.pt``) on the first ``test_images``
    test images, in the run's precision (``tta``: averaged with the mirror image)."""
    model, state = load_model(run_dir / "last.pt")
    images, labels = load_cifar10(datapath, "test", limit=test_images)
    dtype = autocast_dtype(state["config"]["precision"], torch.device("cpu"))
    return evaluate_model(model, images, labels, tta=tta, autocast_dtype=dtype)["accuracy"]
