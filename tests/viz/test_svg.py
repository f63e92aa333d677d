"""Inline SVG line plots of the report (openjepa.viz.svg)."""

import re

import pytest

from openjepa.viz.svg import line_plot_svg, nice_ticks


def test_nice_ticks():
    assert nice_ticks(0, 468) == [0, 200, 400, 600]
    assert nice_ticks(0.996, 1.0) == pytest.approx([0.996, 0.997, 0.998, 0.999, 1.0])
    assert len(nice_ticks(5.0, 5.0)) >= 2
    assert nice_ticks(0.0, 0.3) == pytest.approx([0.0, 0.1, 0.2, 0.3])  # no extra tick from float error
    assert nice_ticks(1, 3, min_step=1.0) == [1, 2, 3]
    assert nice_ticks(0, 2, count=5, min_step=1.0) == [0, 1, 2]  # steps never below min_step


def test_line_plot_breaks_at_non_finite_values_and_shows_the_last_value():
    svg = line_plot_svg([1, 2, 3, 4, 5], [1.0, 2.0, float("nan"), 3.0, 4.0], "loss <total>")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "loss &lt;total&gt;" in svg  # the title is escaped
    assert svg.count("<polyline") == 2  # the NaN splits the line
    assert svg.count("<circle") == 4  # few points: every finite one gets a dot
    assert "last 4" in svg
    assert 'stroke="#d93025"' not in svg


def test_line_plot_marks_steps_inside_the_axis_only():
    svg = line_plot_svg(list(range(10)), [float(i) for i in range(10)], "x", marks=[3, 50])
    assert svg.count('stroke="#d93025"') == 1


def test_line_plot_of_many_points_has_no_dots_and_integer_step_ticks():
    svg = line_plot_svg(list(range(1, 101)), [1 / s for s in range(1, 101)], "loss")
    assert "<circle" not in svg and svg.count("<polyline") == 1
    *x_ticks, caption = re.findall(r'text-anchor="middle" fill="#555">([^<]+)</text>', svg)
    assert caption == "step"
    assert x_ticks == ["50", "100"]  # round steps inside the logged range, printed as integers


def test_line_plot_without_finite_values():
    svg = line_plot_svg([1, 2], [float("nan"), float("inf")], "loss")
    assert "no finite values" in svg and "<polyline" not in svg


def test_line_plot_of_one_point():
    svg = line_plot_svg([7], [0.5], "ema")
    assert svg.count("<circle") == 1 and "<polyline" not in svg and "last 0.5" in svg
