"""Warmup + cosine schedule with restarts, against RECIPE.md and the recorded reference run."""

import csv
import math
from importlib import resources

import pytest
import torch

from vitlib.schedule import WarmupCosine, build_schedule, lr_at, make_scheduler

REFERENCE = dict(lr=1e-3, min_lr=1e-5, warmup=10, cycle_length=50)


def reference_lrs() -> list[float]:
    path = resources.files("vitlib") / "reference" / "seed_run_log.csv"
    with path.open() as f:
        return [float(row["lr_set_for_next_epoch"]) for row in csv.DictReader(f)]


def test_matches_the_recorded_run_shifted_by_its_quirk():
    # Row e of the log (1-based) holds the lr our schedule gives for 0-based epoch e - 1.
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
    s = build_schedule(
        lr=2e-3, min_lr=1e-5, epochs=4, warmup_epochs=1, cycles=1, unit="step", steps_per_epoch=10
    )
    assert (s.warmup, s.cycle_length) == (10, 40)
    assert s.lr_at(0) == 1e-5 and s.lr_at(5) == pytest.approx((1e-5 + 2e-3) / 2)
    assert s.lr_at(10) == pytest.approx(2e-3) and s.lr_at(25) == pytest.approx((1e-5 + 2e-3) / 2)
    assert s.lr_at(39) == pytest.approx(1e-5 + 1.99e-3 * 0.5 * (1 + math.cos(math.pi * 29 / 30)))
    assert s.lr_at(40) == 1e-5  # a (never reached) restart


def test_lambdalr_wrapper_follows_lr_at_and_round_trips_state():
    schedule = build_schedule(
        lr=1e-3,
        min_lr=1e-5,
        epochs=200,
        warmup_epochs=10,
        cycles=4,
        unit="epoch",
        steps_per_epoch=1,
    )
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.AdamW(params, lr=1e-3)
    sched = make_scheduler(opt, schedule)
    seen = []
    for _ in range(60):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([schedule.lr_at(t) for t in range(60)])
    fresh = make_scheduler(torch.optim.AdamW(params, lr=1e-3), WarmupCosine(1e-3, 1e-5, 10, 50))
    fresh.load_state_dict(sched.state_dict())
    assert fresh.last_epoch == 60 and fresh.get_last_lr() == sched.get_last_lr()


def test_wrapper_rejects_an_optimizer_with_another_lr():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
    with pytest.raises(ValueError, match="peak lr"):
        make_scheduler(opt, WarmupCosine(1e-3, 1e-5, 10, 50))
