"""The learning-rate and weight-decay schedules: values at chosen steps, purity, stretching.

The EMA momentum schedule lives with the teacher (tests/methods/test_teacher.py).
"""

import math

import pytest

from openjepa.utils.schedules import Schedules, cosine, linear, warmup_cosine


def test_schedule_values_at_chosen_steps():
    s = Schedules(
        total_steps=1000,
        warmup_steps=100,
        start_lr=2e-4,
        lr=1e-3,
        final_lr=1e-6,
        weight_decay=0.04,
        final_weight_decay=0.4,
    )
    assert s.at(0) == pytest.approx({"lr": 2e-4, "wd": 0.04})
    assert s.at(50)["lr"] == pytest.approx(6e-4)  # halfway through warm-up
    assert s.at(100)["lr"] == pytest.approx(1e-3)
    assert s.at(550)["lr"] == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)  # cosine midpoint
    assert s.at(1000)["lr"] == pytest.approx(1e-6)
    assert s.at(500)["wd"] == pytest.approx(0.22)
    assert s.at(1000)["wd"] == pytest.approx(0.4)
    assert s.at(5000) == s.at(1000)  # clamped past the end


def test_schedule_functions_are_pure_and_stretchable():
    # the reference's ipe_scale = 1.25: a run of 800 steps only sees 80 % of a 1000-step schedule
    assert warmup_cosine(800, 1000, 0, 1.0, 1.0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.8)))
    assert cosine(0, 10, 1.0, 2.0) == 1.0 and cosine(10, 10, 1.0, 2.0) == pytest.approx(2.0)
    assert linear(3, 4, 0.0, 1.0) == 0.75
    assert [warmup_cosine(i, 10, 2, 0, 1, 0) for i in range(10)] == [
        warmup_cosine(i, 10, 2, 0, 1, 0) for i in range(10)
    ]
