"""Inline SVG line plots for the HTML report: round ticks, grid lines, gaps for non-finite values.

No plotting library: the plots are a few SVG elements each, so a report is one self-contained file.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence


def nice_ticks(low: float, high: float, count: int = 5, min_step: float = 0.0) -> list[float]:
    """About ``count`` round ticks covering [low, high]: steps of 1, 2 or 5 × 10^k, at least ``min_step``."""
    if not high > low:
        pad = abs(low) * 0.05 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = max(min_step, next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * (1 - 1e-9)))
    # 1e-9 absorbs float error in low/step, e.g. 0.3 / 0.1 = 2.9999999999999996
    return [i * step for i in range(math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9) + 1)]


def _tick_label(value: float, step: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or step < 1e-4:
        return f"{value:.1e}".replace("e-0", "e-").replace("e+0", "e")
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def _value_label(value: float) -> str:
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4g}"


def line_plot_svg(
    xs: Sequence[float],
    ys: Sequence[float],
    title: str,
    x_label: str = "step",
    width: int = 370,
    height: int = 230,
    marks: Sequence[float] = (),
) -> str:
    """An inline SVG line plot of ``ys`` against ``xs`` with round ticks and grid lines.

    Non-finite values break the line. A series of one point, or of few points, also shows dots.

    Args:
        xs: x values (e.g. steps), same length as ``ys``.
        ys: y values.
        title: plot title; the last finite value is shown next to it.
        x_label: x-axis caption.
        width: SVG width in pixels.
        height: SVG height in pixels.
        marks: x positions to mark with a red vertical line (e.g. steps where collapse was flagged).
    """
    left, right, top, bottom = 62, 14, 30, 38
    pw, ph = width - left - right, height - top - bottom
    points = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" font-size="11">',
        f'<text x="{left}" y="18" font-size="13" font-weight="600">{html.escape(title)}</text>',
    ]
    if not points:
        out.append(f'<text x="{left}" y="{top + ph / 2}" fill="#888">no finite values</text></svg>')
        return "\n".join(out)
    last = _value_label(points[-1][1])
    out.append(f'<text x="{width - right}" y="18" text-anchor="end" fill="#555">last {last}</text>')
    x_min, x_max = min(p[0] for p in points), max(p[0] for p in points)
    x_ticks = nice_ticks(x_min, x_max, min_step=1.0 if all(float(x).is_integer() for x, _ in points) else 0.0)
    y_ticks = nice_ticks(min(p[1] for p in points), max(p[1] for p in points))
    x_step, y_step = x_ticks[1] - x_ticks[0], y_ticks[1] - y_ticks[0]
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    if x_max > x_min:  # the x axis spans the steps logged, not beyond; y gets round limits
        x0, x1 = x_min, x_max
        x_ticks = [x for x in x_ticks if x_min - 1e-9 * x_step <= x <= x_max + 1e-9 * x_step]

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    for y in y_ticks:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>')
        out.append(
            f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end" fill="#555">'
            f"{_tick_label(y, y_step)}</text>"
        )
    for x in x_ticks:
        out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top}" y2="{top + ph}" stroke="#eee"/>')
        out.append(
            f'<text x="{sx(x):.1f}" y="{top + ph + 15}" text-anchor="middle" fill="#555">'
            f"{_tick_label(x, x_step)}</text>"
        )
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    caption = html.escape(x_label)
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" fill="#555">{caption}</text>'
    )
    for x in marks:
        if x0 <= x <= x1:
            out.append(
                f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top}" y2="{top + ph}" stroke="#d93025"/>'
            )
    segments: list[list[tuple[float, float]]] = [[]]
    for x, y in zip(xs, ys, strict=True):
        if math.isfinite(y):
            segments[-1].append((float(x), float(y)))
        elif segments[-1]:
            segments.append([])
    for segment in segments:
        if len(segment) > 1:
            coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in segment)
            out.append(f'<polyline points="{coords}" fill="none" stroke="#1f6fb4" stroke-width="1.6"/>')
    if len(points) <= 40:
        for x, y in points:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.4" fill="#1f6fb4"/>')
    out.append("</svg>")
    return "\n".join(out)
