"""Multi-block masking: the I-JEPA sampler of context and target blocks on a patch grid.

For a batch, the sampler draws once:

* the target block size: scale ``s ~ U(target_scale)`` and aspect ratio ``a ~ U(target_aspect)`` drawn
  independently; the block is ``h × w`` patches with ``h = round(sqrt(s·N·a))``, ``w = round(sqrt(s·N/a))``,
  clamped to the grid (N = number of patches);
* the context block size the same way from ``context_scale`` / ``context_aspect``.

Then, per image: ``num_targets`` target blocks and one context block at uniformly random positions, every
top-left corner from ``0`` to ``H − h`` *inclusive* (so every patch row and column can be covered); the
target patches are removed from the context (unless ``allow_overlap``). An image whose context keeps fewer
than ``min_keep`` patches is redrawn (all its blocks), up to ``max_tries`` times.

Blocks of one batch have one size, so targets need no truncation: ``targets`` is (B, M, h·w). Contexts
differ in size; each is cut to the smallest in its *group* by keeping a *uniformly random* subset of its
patches (not the first ones in raster order), returned sorted. A group is the rows that go through one
forward pass together (row ``b`` of ``groups`` belongs to group ``b mod groups``), as the reference cuts
within each GPU's batch: cut over a global batch of 2048 on a 16x16 grid, contexts would keep about 16 %
fewer patches than cut in groups of 128 (62.6 against 74.2 of 256). With ``trim="batch"`` every context is
cut to the smallest in the whole batch instead.

Before sampling, the recipe is checked (:mod:`openjepa.masks.fit`): one that can leave fewer than
``min_keep`` context patches is rejected, or warned about when that is possible but rare.

Randomness comes only from the ``torch.Generator`` passed in; use :func:`openjepa.rng.step_generator` to
derive one from (seed, step), which makes masks reproducible across restarts, DataLoader workers and ranks.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch

from openjepa.masks.fit import NEGLIGIBLE, FitReport, MaskFitWarning, PairFit, block_shapes, check_fit

#: The chance, per image, of exhausting the redraws above which a recipe is rejected rather than warned
#: about (between the two: a long run may fail at some step).
REJECT = 1e-6
#: Where a group's contexts are shorter than the longest in the batch, ``MaskBatch.context`` holds this.
PAD = -1

_FIX = (
    "lower method.masks.num_targets or method.masks.target_scale, raise method.masks.context_scale, lower "
    "method.masks.min_keep, or set method.masks.allow_overlap=true"
)


class MaskSamplingError(ValueError):
    """A batch's masks could not be drawn: some image kept too few context patches in every redraw."""


@dataclass(frozen=True)
class MaskBatch:
    """Masks of one batch, as patch indices in raster order (``row · grid_w + col``).

    Attributes:
        context: (B, Kc) int64, sorted per row; row ``b`` holds ``context_len[b]`` patches, then ``PAD``
            up to the longest group's length (no padding with one group).
        targets: (B, M, Kt) int64, each block sorted.
        target_shape: (h, w) of the target blocks in this batch.
        context_shape: (h, w) of the context block before target patches were removed.
        context_len: (B,) int64 on the CPU: each row's context length (equal within a group), so that a
            group can be cut out without reading the device.
    """

    context: torch.Tensor
    targets: torch.Tensor
    target_shape: tuple[int, int]
    context_shape: tuple[int, int]
    context_len: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MaskBatch:
        """The index tensors on ``device``; ``context_len`` stays on the CPU."""
        return MaskBatch(
            self.context.to(device, non_blocking=non_blocking),
            self.targets.to(device, non_blocking=non_blocking),
            self.target_shape,
            self.context_shape,
            self.context_len,
        )


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * torch.rand((), generator=generator).item()


def _check_range(name: str, rng: tuple[float, float], lo: float, hi: float) -> tuple[float, float]:
    a, b = float(rng[0]), float(rng[1])
    if not (lo < a <= b <= hi):
        raise ValueError(f"method.masks.{name} must satisfy {lo} < min <= max <= {hi}, got {rng}")
    return a, b


class MultiBlockMaskSampler:
    """Draw I-JEPA context and target masks for a batch (see the module docstring).

    Args:
        grid_size: patch grid (rows, cols) or an int for a square grid.
        num_targets: target blocks per image (M).
        target_scale: range of a target block's area as a fraction of the grid.
        target_aspect: range of a target block's aspect ratio (height / width).
        context_scale: range of the context block's area fraction.
        context_aspect: range of the context block's aspect ratio.
        min_keep: fewest patches a context may keep after target patches are removed.
        allow_overlap: keep target patches in the context (no removal).
        max_tries: redraws per image before giving up with an error.
        trim: cut contexts to the shortest in their group (``"group"``) or in the whole batch (``"batch"``).
        check: check at construction that the recipe leaves ``min_keep`` patches (:mod:`openjepa.masks.fit`):
            raise ``ValueError`` if it fails too often, warn (:class:`MaskFitWarning`) if it can fail.

    Example:
        >>> sampler = MultiBlockMaskSampler(14)
        >>> masks = sampler(256, torch.Generator().manual_seed(0))
        >>> masks.targets.shape[:2]
        torch.Size([256, 4])
    """

    def __init__(
        self,
        grid_size: int | tuple[int, int],
        num_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        context_aspect: tuple[float, float] = (1.0, 1.0),
        min_keep: int = 10,
        allow_overlap: bool = False,
        max_tries: int = 50,
        trim: Literal["group", "batch"] = "group",
        check: bool = True,
    ):
        self.grid_h, self.grid_w = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
        self.num_patches = self.grid_h * self.grid_w
        if num_targets < 1:
            raise ValueError(f"method.masks.num_targets must be >= 1, got {num_targets}")
        self.num_targets = int(num_targets)
        self.target_scale = _check_range("target_scale", target_scale, 0.0, 1.0)
        self.target_aspect = _check_range("target_aspect", target_aspect, 0.0, math.inf)
        self.context_scale = _check_range("context_scale", context_scale, 0.0, 1.0)
        self.context_aspect = _check_range("context_aspect", context_aspect, 0.0, math.inf)
        if not 1 <= min_keep <= self.num_patches:
            raise ValueError(
                f"method.masks.min_keep must be in [1, {self.num_patches}] for a "
                f"{self.grid_h}x{self.grid_w} grid, "
                f"got {min_keep}"
            )
        self.min_keep = int(min_keep)
        self.allow_overlap = bool(allow_overlap)
        self.max_tries = int(max_tries)
        largest_context = self.block_shape(self.context_scale[1], 1.0)
        if largest_context[0] * largest_context[1] < self.min_keep:
            raise ValueError(
                f"the largest context block ({largest_context[0]}x{largest_context[1]} patches) is smaller "
                f"than method.masks.min_keep={self.min_keep}: raise method.masks.context_scale or lower "
                "method.masks.min_keep"
            )
        if trim not in ("group", "batch"):
            raise ValueError(f"method.masks.trim must be 'group' or 'batch', got {trim!r}")
        self.trim = trim
        self.fit: FitReport | None = None
        if check:
            self.fit = self.check_fit()

    def check_fit(self) -> FitReport:
        """Check that every draw can keep ``min_keep`` context patches (see :mod:`openjepa.masks.fit`).

        Raises:
            ValueError: some pair of block shapes the recipe can draw leaves too few patches in so many
                placements that an image exhausts its ``max_tries`` redraws with a chance above ``REJECT``.
        """
        grid = (self.grid_h, self.grid_w)
        report = check_fit(
            grid,
            self.num_targets,
            block_shapes(grid, self.num_patches, self.target_scale, self.target_aspect),
            block_shapes(grid, self.num_patches, self.context_scale, self.context_aspect),
            self.min_keep,
            self.allow_overlap,
            self.max_tries,
            self._kept,
        )
        worst, chance = report.worst, report.failure_chance
        if worst is None or chance <= NEGLIGIBLE:
            return report
        what = self._describe_failure(worst, chance)
        if chance > REJECT:
            raise ValueError(f"{what}: {_FIX}")
        warnings.warn(f"{what}; a long run may stop there. To be safe: {_FIX}", MaskFitWarning, stacklevel=3)
        return report

    def _describe_failure(self, pair: PairFit, chance: float) -> str:
        (th, tw), (ch, cw) = pair.target, pair.context
        return (
            f"the mask recipe can fail: {self.num_targets} target blocks of {th}x{tw} patches "
            f"(method.masks.target_scale={list(self.target_scale)}) leave fewer than "
            f"method.masks.min_keep={self.min_keep} patches of a {ch}x{cw} context "
            f"(method.masks.context_scale={list(self.context_scale)}) on the {self.grid_h}x{self.grid_w} "
            f"patch grid in {1 - pair.fit_rate:.1%} of placements, so an image exhausts its "
            f"{self.max_tries} redraws with chance {chance:.1e}"
        )

    def _kept(
        self, n: int, target: tuple[int, int], context: tuple[int, int], generator: torch.Generator
    ) -> torch.Tensor:
        """Context patches kept by ``n`` placements of blocks of the given shapes: (n,)."""
        t_idx = self._place_blocks((n, self.num_targets), *target, generator)  # (n, M, Kt)
        c_idx = self._place_blocks((n,), *context, generator)  # (n, Kc)
        c_mask = torch.zeros(n, self.num_patches, dtype=torch.bool).scatter_(1, c_idx, True)  # (n, N)
        if not self.allow_overlap:
            c_mask.scatter_(1, t_idx.reshape(n, -1), False)
        return c_mask.sum(1)

    def block_shape(self, scale: float, aspect: float) -> tuple[int, int]:
        """(h, w) in patches of a block covering ``scale`` of the grid with height/width ``aspect``."""
        area = scale * self.num_patches
        h = round(math.sqrt(area * aspect))
        w = round(math.sqrt(area / aspect))
        return min(max(h, 1), self.grid_h), min(max(w, 1), self.grid_w)

    def draw_block_shape(
        self, scale: tuple[float, float], aspect: tuple[float, float], generator: torch.Generator | None
    ) -> tuple[int, int]:
        """Draw scale and aspect independently, then the block shape."""
        s = _uniform(*scale, generator)
        a = _uniform(*aspect, generator)
        return self.block_shape(s, a)

    def _place_blocks(
        self, shape: tuple[int, ...], h: int, w: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Patch indices of ``h × w`` blocks at uniform positions: (*shape, h·w), raster order per block."""
        top = torch.randint(0, self.grid_h - h + 1, shape, generator=generator)  # inclusive of H - h
        left = torch.randint(0, self.grid_w - w + 1, shape, generator=generator)
        offsets = (torch.arange(h)[:, None] * self.grid_w + torch.arange(w)[None, :]).flatten()  # (h·w,)
        return (top * self.grid_w + left).unsqueeze(-1) + offsets  # (*shape, h·w)

    def __call__(
        self, batch_size: int, generator: torch.Generator | None = None, groups: int = 1
    ) -> MaskBatch:
        """Sample masks for ``batch_size`` images; row ``b`` belongs to group ``b mod groups``.

        The draws do not depend on ``groups``: only where contexts are cut does. So the masks of a group are
        the same for any split of the batch into processes and micro-batches with the same group size.

        Raises:
            MaskSamplingError: an image kept fewer than ``min_keep`` context patches in every redraw.
        """
        if groups < 1 or batch_size % groups:
            raise ValueError(f"{batch_size} images cannot be split into {groups} equal groups")
        th, tw = self.draw_block_shape(self.target_scale, self.target_aspect, generator)
        ch, cw = self.draw_block_shape(self.context_scale, self.context_aspect, generator)
        n, m = self.num_patches, self.num_targets

        targets = torch.empty(batch_size, m, th * tw, dtype=torch.long)  # (B, M, Kt)
        context = torch.empty(batch_size, n, dtype=torch.bool)  # (B, N) membership
        todo = torch.arange(batch_size)
        for _ in range(self.max_tries):
            k = len(todo)
            t_idx = self._place_blocks((k, m), th, tw, generator)  # (k, M, Kt)
            c_idx = self._place_blocks((k,), ch, cw, generator)  # (k, ch·cw)
            c_mask = torch.zeros(k, n, dtype=torch.bool).scatter_(1, c_idx, True)  # (k, N)
            if not self.allow_overlap:
                c_mask.scatter_(1, t_idx.reshape(k, -1), False)
            ok = c_mask.sum(1) >= self.min_keep  # (k,)
            targets[todo[ok]] = t_idx[ok]
            context[todo[ok]] = c_mask[ok]
            todo = todo[~ok]
            if len(todo) == 0:
                break
        else:
            raise MaskSamplingError(
                f"could not sample a context of at least method.masks.min_keep={self.min_keep} patches on "
                f"the {self.grid_h}x{self.grid_w} patch grid in {self.max_tries} tries: {m} target blocks "
                f"of {th}x{tw} patches leave too little of a {ch}x{cw} context. Lower "
                "method.masks.num_targets or method.masks.target_scale, raise method.masks.context_scale, "
                "lower method.masks.min_keep, or set method.masks.allow_overlap=true"
            )

        # Cut every context to its group's smallest by a uniformly random subset of its patches.
        if self.trim == "batch":
            groups = 1
        keep = context.sum(1).view(-1, groups).amin(0)  # (groups,): row b = i·groups + q is in group q
        scores = torch.rand(batch_size, n, generator=generator).masked_fill_(~context, 2.0)  # (B, N)
        chosen = torch.full((batch_size, int(keep.max())), PAD, dtype=torch.long)  # (B, Kc)
        for q, k in enumerate(keep.tolist()):
            rows = slice(q, None, groups)
            picked = scores[rows].topk(k, dim=1, largest=False, sorted=False).indices  # (B/groups, k)
            chosen[rows, :k] = picked.sort(dim=1).values
        return MaskBatch(chosen, targets, (th, tw), (ch, cw), keep.repeat(batch_size // groups))
