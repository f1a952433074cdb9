"""Warmup + cosine schedule with restarts, against RECIPE.md and the recorded reference run.
(How the run steps it, per step, per epoch and on the clock: tests/test_train.py and
tests/test_time_budget.py.)"""

import csv
import math
from importlib import resources

import pytest

from vitlib.schedule import lr_at

REFERENCE = dict(lr=1e-3, min_lr=1e-5, warmup=10, cycle_length=50)


def reference_lrs() -> list[float]:
    path = resources.files("vitlib") / "reference" / "seed_run_log.csv"
    with path.open() as f:
        return [float(row["lr_set_for_next_epoch"]) for row in csv.DictReader(f)]


def test_matches_the_recorded_run_one_epoch_behind():
    # Row e of the log (1-based) holds the lr set after epoch e, used in epoch e + 1: the lr our
    # schedule gives 0-based epoch e - 1. The seed's run ran one epoch behind the schedule.
    recorded = reference_lrs()
    assert len(recorded) == 200
    ours = [lr_at(t, **REFERENCE) for t in range(200)]
    assert ours == pytest.approx(recorded, rel=1e-6, abs=1e-12)


def test_warmup_is_linear_from_min_lr_to_peak():
    lrs = [lr_at(t, **REFERENCE) for t in range(11)]
    assert lrs[0] == 1e-5 and lrs[10] == pytest.approx(1e-3)
    steps = [b - a for a, b in zip(lrs, lrs[1:], strict=False)]
    assert steps == pytest.approx([(1e-3 - 1e-5) / 10] * 10)


def test_cosine_decreases_to_min_lr_and_restarts_at_50_100_150():
    cycle = [lr_at(t, **REFERENCE) for t in range(10, 50)]
    assert all(a > b for a, b in zip(cycle, cycle[1:], strict=False))
    assert cycle[-1] == pytest.approx(1e-5 + 0.99e-3 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))
    assert lr_at(50 - 1e-9, **REFERENCE) == pytest.approx(1e-5, abs=1e-10)  # cosine minimum
    for restart in (50, 100, 150):
        assert lr_at(restart, **REFERENCE) == pytest.approx(1e-5)
        assert lr_at(restart - 1, **REFERENCE) > lr_at(restart, **REFERENCE)
        assert lr_at(restart + 10, **REFERENCE) == pytest.approx(1e-3)
    peaks = [t for t in range(200) if lr_at(t, **REFERENCE) == pytest.approx(1e-3)]
    assert peaks == [10, 60, 110, 160]


def test_per_step_single_cycle():
    """The fast and cpu-quick shape: 4 epochs of 10 steps, warmup 1 epoch, one cycle."""
    s = dict(lr=2e-3, min_lr=1e-5, warmup=10, cycle_length=40)
    assert lr_at(0, **s) == 1e-5 and lr_at(5, **s) == pytest.approx((1e-5 + 2e-3) / 2)
    assert lr_at(10, **s) == pytest.approx(2e-3) and lr_at(25, **s) == pytest.approx((1e-5 + 2e-3) / 2)
    assert lr_at(39, **s) == pytest.approx(1e-5 + 1.99e-3 * 0.5 * (1 + math.cos(math.pi * 29 / 30)))
    assert lr_at(40, **s) == 1e-5  # a (never reached) restart
