"""Learning-rate schedule: cosine warm restarts as torch defines them, after a linear warm-up."""

from __future__ import annotations

import math

import pytest
import torch

from rxvision.engine.schedule import lr_at

LR, T_0, T_MULT, ETA_MIN = 1e-4, 10, 2, 1e-6  # the spec's recipe


def test_matches_torch_cosine_warm_restarts_without_warmup() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt, T_0=T_0, T_mult=T_MULT, eta_min=ETA_MIN)
    for epoch in range(71):
        expected = opt.param_groups[0]["lr"]
        assert lr_at(epoch, LR, 0, T_0, T_MULT, ETA_MIN) == pytest.approx(expected, rel=1e-9), epoch
        opt.step()
        sched.step()


def test_restarts_fall_at_10_30_70() -> None:
    for restart in (0, 10, 30, 70):
        assert lr_at(restart, LR, 0, T_0, T_MULT, ETA_MIN) == pytest.approx(LR)
        if restart:
            assert lr_at(restart - 1e-6, LR, 0, T_0, T_MULT, ETA_MIN) == pytest.approx(
                ETA_MIN, abs=1e-9)
    # Fractional epochs follow the cosine between epochs too (half of the first cycle).
    assert lr_at(5.0, LR, 0, T_0, T_MULT, ETA_MIN) == pytest.approx((LR + ETA_MIN) / 2)
    assert lr_at(2.5, LR, 0, T_0, T_MULT, ETA_MIN) == pytest.approx(
        ETA_MIN + (LR - ETA_MIN) * (1 + math.cos(math.pi * 0.25)) / 2)


def test_warmup_ramps_linearly_then_hands_over() -> None:
    warm = 2.0
    ramp = [lr_at(e, LR, warm, T_0, T_MULT, ETA_MIN) for e in (0.5, 1.0, 1.5)]
    assert ramp == pytest.approx([LR / 4, LR / 2, 3 * LR / 4])
    assert 0 < lr_at(0.0, LR, warm, T_0, T_MULT, ETA_MIN) < LR / 100  # small but not zero
    # After warm-up the cosine schedule starts at its peak, shifted by the warm-up.
    for e in (2.0, 7.0, 12.0, 32.0, 40.5):
        assert lr_at(e, LR, warm, T_0, T_MULT, ETA_MIN) == pytest.approx(
            lr_at(e - warm, LR, 0, T_0, T_MULT, ETA_MIN))
