"""The EMA teacher: its update formula, its momentum schedule and how it is made."""

import pytest
import torch
from torch import nn

from openjepa.methods.teacher import ema_update, make_teacher, momentum_at


def test_ema_formula():
    torch.manual_seed(0)
    online, target = nn.Linear(4, 3), nn.Linear(4, 3)
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    ema_update(target, online, 0.0)  # m = 0 copies
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(t, o)
    with pytest.raises(ValueError):
        ema_update(target, online, 1.5)


def test_momentum_zero_copies_exactly_and_one_keeps_the_target():
    torch.manual_seed(0)
    online, target = nn.Linear(4, 3), nn.Linear(4, 3)
    ema_update(target, online, 0.0)
    assert all(torch.equal(t, o) for t, o in zip(target.parameters(), online.parameters(), strict=True))
    kept = [p.clone() for p in target.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    ema_update(target, online, 1.0)
    assert all(torch.equal(t, k) for t, k in zip(target.parameters(), kept, strict=True))


def test_mismatched_modules_are_refused():
    with pytest.raises(ValueError, match="target has 2 parameters, online has 4"):
        ema_update(nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 3)), 0.5)


def test_momentum_schedule_values():
    """The EMA values the old ``Schedules`` gave (ema_start 0.996, ema_end 1.0 over 1000 steps)."""
    assert momentum_at(0, 1000, 0.996, 1.0) == pytest.approx(0.996)
    assert momentum_at(250, 1000, 0.996, 1.0) == pytest.approx(0.997)
    assert momentum_at(1000, 1000, 0.996, 1.0) == pytest.approx(1.0)
    assert momentum_at(5000, 1000, 0.996, 1.0) == momentum_at(1000, 1000, 0.996, 1.0)  # clamped
    assert momentum_at(7, 10, 0.0, 0.0) == 0.0  # [0, 0]: the target is a copy at every step


def test_make_teacher_is_a_frozen_independent_copy():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    teacher = make_teacher(student)
    assert teacher is not student
    for s, t in zip(student.parameters(), teacher.parameters(), strict=True):
        assert torch.equal(s, t) and s.data_ptr() != t.data_ptr()
        assert s.requires_grad and not t.requires_grad
    with torch.no_grad():
        student[0].weight.add_(1.0)
    assert not torch.equal(student[0].weight, teacher[0].weight)
