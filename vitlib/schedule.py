"""Learning-rate schedule: a periodic linear warmup + cosine, as a pure function of time.

Linear warmup from ``min_lr`` to ``lr``, then a cosine back down to ``min_lr``, repeated in equal
cycles. It varies the warm restarts of SGDR (Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient
Descent with Warm Restarts", https://arxiv.org/abs/1608.03983): SGDR jumps straight back to the
peak at every restart and anneals every batch; here every cycle re-warms linearly from ``min_lr``
(10 of every 50 epochs in the reference recipe).

The time ``t`` is in epochs (the reference recipe: 200 epochs as 4 cycles of 50, warmup 10, the
lr constant within an epoch) or in optimizer steps (the ``fast`` and ``cpu-quick`` presets: one
cycle over all steps). Within a cycle of length ``L`` with warmup ``W``, at ``p = t mod L``::

    p <  W:  min_lr + (lr - min_lr) * p / W
    p >= W:  min_lr + (lr - min_lr) * (1 + cos(pi * (p - W) / (L - W))) / 2

so ``t = 0`` gives ``min_lr``, ``t = W`` the peak ``lr`` and every restart (``t = k * L``) drops
back to ``min_lr``. This matches the recorded reference run value for value
(``seed_run_log.csv``), which ran one epoch behind it (RECIPE.md).

There is no scheduler object: the training loop asks ``lr_at`` for every step's learning rate, so
nothing about the schedule is saved in a checkpoint, and a run extended to more epochs simply
follows the longer schedule.
"""

from __future__ import annotations

import math


def lr_at(t: float, *, lr: float, min_lr: float, warmup: float, cycle_length: float) -> float:
    """The learning rate at time ``t`` (epochs or steps, may be fractional)."""
    p = math.fmod(t, cycle_length)
    if p < warmup:
        return min_lr + (lr - min_lr) * p / warmup
    progress = (p - warmup) / (cycle_length - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
