"""Learning-rate schedule: a periodic linear warmup + cosine. Linear warmup from ``min_lr`` to
``lr``, then a cosine back down to ``min_lr``, repeated in equal cycles.

It varies the warm restarts of SGDR (Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient
Descent with Warm Restarts", https://arxiv.org/abs/1608.03983). SGDR jumps straight back to the
peak at every restart and anneals every batch; here every cycle re-warms linearly from
``min_lr`` (10 of every 50 epochs in the reference recipe), and the reference steps the schedule
once per epoch, so the learning rate is constant within an epoch.

The unit ``t`` is whatever the scheduler is stepped in: epochs (the reference recipe: 200 epochs
as 4 cycles of 50, warmup 10) or optimizer steps (the ``fast`` preset: one cycle over all steps).
Within a cycle of length ``L`` with warmup ``W``, at position ``p = t mod L``::

    p <  W:  min_lr + (lr - min_lr) * p / W
    p >= W:  min_lr + (lr - min_lr) * (1 + cos(pi * (p - W) / (L - W))) / 2

so ``t = 0`` gives ``min_lr``, ``t = W`` gives the peak ``lr`` and every restart
(``t = k * L``) drops back to ``min_lr``. This matches the recorded reference run value for value
(``seed_run_log.csv``), without its one-epoch shift (see RECIPE.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR


def lr_at(t: float, *, lr: float, min_lr: float, warmup: float, cycle_length: float) -> float:
    """The learning rate at time ``t`` (epochs or steps, may be fractional)."""
    p = math.fmod(t, cycle_length)
    if p < warmup:
        return min_lr + (lr - min_lr) * p / warmup
    progress = (p - warmup) / (cycle_length - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class WarmupCosine:
    """``lr_at`` with fixed parameters; calling it gives the LambdaLR factor ``lr_at(t) / lr``.

    A callable object (not a lambda) so that ``LambdaLR.state_dict()`` stores its fields.
    """

    lr: float
    min_lr: float
    warmup: float
    cycle_length: float

    def lr_at(self, t: float) -> float:
        return lr_at(
            t, lr=self.lr, min_lr=self.min_lr, warmup=self.warmup, cycle_length=self.cycle_length
        )

    def __call__(self, t: int) -> float:
        return self.lr_at(t) / self.lr


def build_schedule(
    *,
    lr: float,
    min_lr: float,
    epochs: int,
    warmup_epochs: float,
    cycles: int,
    unit: str,
    steps_per_epoch: int,
) -> WarmupCosine:
    """The schedule of a run, in epochs (``unit="epoch"``) or optimizer steps (``"step"``)."""
    scale = steps_per_epoch if unit == "step" else 1
    return WarmupCosine(
        lr=lr,
        min_lr=min_lr,
        warmup=warmup_epochs * scale,
        cycle_length=epochs * scale / cycles,
    )


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: WarmupCosine) -> LambdaLR:
    """A LambdaLR that sets every group's lr to ``schedule.lr_at(t)``; the groups' initial lr must
    be ``schedule.lr``. Construction sets t = 0 (lr = min_lr); call ``.step()`` once per unit."""
    for group in optimizer.param_groups:
        if group["lr"] != schedule.lr:
            raise ValueError(
                f"optimizer lr {group['lr']} differs from the schedule's peak lr {schedule.lr}"
            )
    return LambdaLR(optimizer, lr_lambda=schedule)
