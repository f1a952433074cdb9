"""Learning-rate schedule: a periodic linear warmup + cosine, as a pure function of time.

A variant of SGDR's warm restarts (Loshchilov & Hutter 2017, https://arxiv.org/abs/1608.03983),
which jumps straight back to the peak at every restart: here every cycle re-warms linearly from
``min_lr``. The time ``t`` is in epochs (the reference recipe: 4 cycles of 50 epochs, warmup 10)
or in optimizer steps (``fast``, ``cpu-quick``: one cycle). In a cycle of length ``L`` with
warmup ``W``, at ``p = t mod L``::

    p <  W:  min_lr + (lr - min_lr) * p / W
    p >= W:  min_lr + (lr - min_lr) * (1 + cos(pi * (p - W) / (L - W))) / 2

so ``t = 0`` gives ``min_lr``, ``t = W`` the peak and each restart ``t = k L`` ``min_lr`` again:
the recorded reference run value for value (``seed_run_log.csv``), one epoch behind. There is
no scheduler object to save: the loop asks ``lr_at`` for every step's learning rate.
"""

import math


def lr_at(t: float, *, lr: float, min_lr: float, warmup: float, cycle_length: float) -> float:
    """The learning rate at time ``t`` (epochs or steps, may be fractional)."""
    p = math.fmod(t, cycle_length)
    if p < warmup:
        return min_lr + (lr - min_lr) * p / warmup
    progress = (p - warmup) / (cycle_length - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
