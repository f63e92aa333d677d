"""Does a multi-block recipe always leave ``min_keep`` context patches? Checked once, before training.

The sampler redraws an image whose context keeps fewer than ``min_keep`` patches, up to ``max_tries``
times, then fails. Because masks are a pure function of the step, a recipe that fails once fails at the
same step on every resume, so the recipe is checked when the sampler is built:

1. a sound bound: for every block shape the rounding in :meth:`MultiBlockMaskSampler.block_shape` can
   produce (:func:`block_shapes`), the smallest context minus an upper bound on how much of it ``M``
   target blocks can cover (:func:`covered_bound`). If that is at least ``min_keep`` for every pair of
   shapes, no draw can fail: the recipe is accepted silently;
2. otherwise a deterministic probe: for each pair of shapes the bound cannot clear, ``probe`` placements
   of the blocks (one try each) measure the chance ``p`` that a try fits. A pair with no fitting
   placement fails whenever it is drawn: the recipe is rejected. Otherwise the chance that an image
   exhausts its tries, ``(1 − p)^max_tries``, is reported, and a warning is raised when it is not
   negligible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Shape = tuple[int, int]

#: Per-image chance of exhausting the redraws below which a recipe the bound cannot clear passes silently.
NEGLIGIBLE = 1e-12


class MaskFitWarning(UserWarning):
    """A mask recipe may, rarely, fail to leave ``min_keep`` context patches."""


@dataclass(frozen=True)
class PairFit:
    """One (target shape, context shape) pair the bound could not clear, and what the probe found.

    Attributes:
        target: (h, w) of the target blocks.
        context: (h, w) of the context block.
        fewest: the bound's fewest context patches left (below ``min_keep``).
        fit_rate: fraction of the probe's placements that kept at least ``min_keep`` patches.
    """

    target: Shape
    context: Shape
    fewest: int
    fit_rate: float


@dataclass(frozen=True)
class FitReport:
    """The outcome of :func:`check_fit`.

    Attributes:
        pairs: number of realisable (target shape, context shape) pairs.
        unproven: the pairs the bound could not clear, with their probe results (empty: always fits).
        max_tries: the sampler's redraws per image.
    """

    pairs: int
    unproven: tuple[PairFit, ...]
    max_tries: int

    @property
    def always_fits(self) -> bool:
        return not self.unproven

    @property
    def impossible(self) -> tuple[PairFit, ...]:
        """Pairs with no fitting placement in the probe: a batch that draws them fails."""
        return tuple(p for p in self.unproven if p.fit_rate == 0.0)

    @property
    def worst(self) -> PairFit | None:
        return min(self.unproven, key=lambda p: p.fit_rate, default=None)

    @property
    def failure_chance(self) -> float:
        """Estimated chance that one image drawn with the worst pair exhausts its redraws."""
        worst = self.worst
        return 0.0 if worst is None else (1.0 - worst.fit_rate) ** self.max_tries


def _overlaps(lo: float, hi: float, lo2: float, hi2: float) -> bool:
    return lo <= hi2 and lo2 <= hi


def block_shapes(
    grid: Shape, num_patches: int, scale: tuple[float, float], aspect: tuple[float, float]
) -> list[Shape]:
    """Every (h, w) that ``round(sqrt(s·N·a))``, ``round(sqrt(s·N/a))`` clamped to the grid can give for
    ``s`` in ``scale`` and ``a`` in ``aspect`` (interval ends included, so possibly a few more: safe).

    With ``u = sqrt(s·N·a)`` and ``v = sqrt(s·N/a)``, the reachable ``(log u, log v)`` form a rectangle
    turned by 45° (``u·v = s·N``, ``u/v = a``), and the ``(u, v)`` that round to ``(h, w)`` an upright box;
    two convex polygons meet exactly when their projections meet on every edge normal: the u, v, u·v
    and u/v axes.
    """
    s0, s1 = scale[0] * num_patches, scale[1] * num_patches
    a0, a1 = aspect
    u_lo, u_hi = math.sqrt(s0 * a0), math.sqrt(s1 * a1)
    v_lo, v_hi = math.sqrt(s0 / a1), math.sqrt(s1 / a0)

    def box(k: int, size: int) -> tuple[float, float]:
        # clamping sends everything below 1.5 to 1 and everything from size − 0.5 up to size
        return (0.0 if k == 1 else k - 0.5), (math.inf if k == size else k + 0.5)

    shapes = []
    for h in range(1, grid[0] + 1):
        bu = box(h, grid[0])
        if not _overlaps(*bu, u_lo, u_hi):
            continue
        for w in range(1, grid[1] + 1):
            bv = box(w, grid[1])
            ratio = (bu[0] / bv[1], math.inf if bv[0] == 0 else bu[1] / bv[0])
            if (
                _overlaps(*bv, v_lo, v_hi)
                and _overlaps(bu[0] * bv[0], bu[1] * bv[1], s0, s1)
                and _overlaps(*ratio, a0, a1)
            ):
                shapes.append((h, w))
    return shapes


def _line_bound(units: int, length: int, per: int, lines: int) -> int:
    """Most cells ``units`` block-lines of ``per`` cells cover over ``lines`` lines of ``length`` cells."""
    full, rest = divmod(length, per)
    return per * min(units, full * lines) + rest * min(max(0, units - full * lines), lines)


def covered_bound(context: Shape, target: Shape, num_targets: int) -> int:
    """An upper bound on how many patches of an ``h × w`` context ``num_targets`` target blocks can cover.

    A block clipped to the context fits, whole, inside it as an ``h' × w'`` block with ``h' = min(th, h)``
    (covering at least as much), so consider those. Row ``y`` of the context is crossed by ``n_y`` blocks,
    ``Σ n_y = M·h'``, and they cover at most ``min(w, n_y·w')`` of it; the best split of ``M·h'`` over the
    ``h`` rows bounds the union. The same by columns; the smaller bound holds.
    """
    (ch, cw), (th, tw) = context, target
    h, w = min(th, ch), min(tw, cw)
    by_rows = _line_bound(num_targets * h, cw, w, ch)
    by_cols = _line_bound(num_targets * w, ch, h, cw)
    return min(by_rows, by_cols, ch * cw)


def check_fit(
    grid: Shape,
    num_targets: int,
    target_shapes: list[Shape],
    context_shapes: list[Shape],
    min_keep: int,
    allow_overlap: bool,
    max_tries: int,
    place: Callable[[int, Shape, Shape, torch.Generator], torch.Tensor],
    probe: int = 2000,
) -> FitReport:
    """Bound every pair of shapes; probe the pairs the bound cannot clear (see the module docstring).

    Args:
        grid: the patch grid (rows, cols).
        num_targets: target blocks per image.
        target_shapes, context_shapes: the realisable block shapes (:func:`block_shapes`).
        min_keep: fewest context patches an image must keep.
        allow_overlap: target patches stay in the context.
        max_tries: the sampler's redraws per image.
        place: ``place(n, target, context, generator)`` → (n,) patches kept by ``n`` placements of one
            context and ``num_targets`` target blocks of the given shapes (the sampler's own placement).
        probe: placements per unclear pair; drawn from a fixed seed, so the check is deterministic.
    """
    unproven = []
    for context in context_shapes:
        for target in target_shapes:
            covered = 0 if allow_overlap else covered_bound(context, target, num_targets)
            fewest = context[0] * context[1] - covered
            if fewest >= min_keep:
                continue
            with torch.device("cpu"):  # real numbers even while a model is built on the meta device
                kept = place(probe, target, context, torch.Generator().manual_seed(0))
                rate = (kept >= min_keep).float().mean().item()
            unproven.append(PairFit(target, context, fewest, rate))
    return FitReport(len(target_shapes) * len(context_shapes), tuple(unproven), max_tries)
