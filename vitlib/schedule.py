"""Learning-rate schedule: a periodic linear warmup + cosine, as a pure function of time.

Every cycle re-warms linearly from ``min_lr``, then decays along a half cosine back to it (SGDR's
warm restarts jump straight back to the peak: notebook 04). The time ``t`` is in epochs or in
optimizer steps; the recorded reference run follows it value for value (``seed_run_log.csv``),
one epoch behind. There is no scheduler object to save: the loop asks ``lr_at`` for each step."""

import math


def lr_at(t: float, *, lr: float, min_lr: float, warmup: float, cycle_length: float) -> float:
    """The learning rate at time ``t`` (epochs or steps, may be fractional)."""
    p = math.fmod(t, cycle_length)
    if p < warmup:
        return min_lr + (lr - min_lr) * p / warmup
    progress = (p - warmup) / (cycle_length - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
