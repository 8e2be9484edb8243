"""Learning-rate schedule: linear warm-up, then cosine annealing with warm restarts.

Matches ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`` (T_0, T_mult, eta_min, in
epochs) but is evaluated per step from the fractional epoch, so warm-up and restarts
fall between epochs too, and resuming needs only the step counter.
"""

from __future__ import annotations

import math


def lr_at(epoch: float, base_lr: float, warmup_epochs: float, t_0: int, t_mult: int,
          eta_min: float) -> float:
    """Learning rate at a fractional ``epoch`` (0 = start of training)."""
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return base_lr * max(epoch / warmup_epochs, 1e-3)
    t = epoch - warmup_epochs
    period = float(t_0)
    while t >= period:  # find the current restart cycle
        t -= period
        period *= t_mult
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / period)) / 2
