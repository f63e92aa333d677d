"""The joint-embedding predictive architecture shared by the masked-prediction methods.

A context encoder sees one context block of an image; a narrow predictor predicts, from its tokens and the
positions of a few masked target blocks, what a teacher (an EMA copy of the encoder, seeing the whole
image) produces there. This module holds the networks, the multi-block masks, the teacher and its update;
a method built on it (:class:`JEPA`) only writes its loss in ``forward``.

Per step, for images x and masks (context C, target blocks T_1 … T_M):

1. targets: ``h = layer_norm(f_θ̄(x))`` on the full image, no gradient, no affine; take ``h`` at each T_m;
2. context: ``z = f_θ(x restricted to C)``;
3. prediction: ``ŷ_m = g_φ(z, positions of C, positions of T_m)`` for each block;
4. after the optimizer step, ``θ̄ ← m·θ̄ + (1 − m)·θ`` with ``m`` following ``ema`` linearly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from openjepa.config import Config, ConfigError, MethodConfig, bounded
from openjepa.losses.jepa import JEPA_LOSSES
from openjepa.losses.sigreg import SIGReg, random_directions, sigreg
from openjepa.masks.gather import gather_tokens
from openjepa.masks.multiblock import MaskSamplingError, MultiBlockMaskSampler
from openjepa.methods.base import Method, StepContext
from openjepa.methods.teacher import ema_update, make_teacher, momentum_at
from openjepa.models.build import build_encoder
from openjepa.models.predictor import Predictor
from openjepa.models.vit import VisionTransformer
from openjepa.rng import Stream, step_generator
from openjepa.utils.device_copy import to_device


@dataclass
class PredictorConfig:
    """The predictor: a narrow ViT over context tokens and one mask token per target position.

    Attributes:
        depth: predictor blocks.
        dim: predictor width (384 in the published configs).
        heads: attention heads (null: the encoder's).
        mode: ``separate`` (each target block its own sequence, the reference's semantics) or ``joint``
            (one sequence per image with an attention mask; cheaper, a different function).
    """

    depth: int = bounded(6, ge=1)
    dim: int = bounded(96, ge=1)
    heads: int | None = bounded(None, ge=1)
    mode: Literal["separate", "joint"] = "separate"


@dataclass
class MaskConfig:
    """Multi-block masks on the patch grid (see :mod:`openjepa.masks.multiblock`).

    Attributes:
        num_targets: target blocks per image.
        target_scale: range of a target block's area, as a fraction of the grid.
        target_aspect: range of a target block's aspect ratio (height / width).
        context_scale: range of the context block's area fraction (before target patches are removed).
        context_aspect: range of the context block's aspect ratio.
        min_keep: fewest patches a context may keep after the target patches are removed.
        allow_overlap: keep the target patches in the context.
        trim: cut each context to the shortest in its ``group`` (the rows of one forward pass: one
            micro-batch of one process; the published runs cut within each GPU's batch) or in the whole
            global ``batch`` (at batch 2048 on a 16x16 grid, about 16 % fewer context patches than groups
            of 128).
    """

    num_targets: int = bounded(4, ge=1)
    target_scale: tuple[float, float] = bounded((0.15, 0.2), gt=0, le=1, ascending=True)
    target_aspect: tuple[float, float] = bounded((0.75, 1.5), gt=0, ascending=True)
    context_scale: tuple[float, float] = bounded((0.85, 1.0), gt=0, le=1, ascending=True)
    context_aspect: tuple[float, float] = bounded((1.0, 1.0), gt=0, ascending=True)
    min_keep: int = bounded(10, ge=1)
    allow_overlap: bool = False
    trim: Literal["group", "batch"] = "group"


@dataclass
class JEPAConfig(MethodConfig):
    """Keys of every method built on :class:`JEPA`.

    Attributes:
        predictor: the predictor network.
        masks: the context and target blocks.
        ema: EMA momentum of the target encoder at the start and at the end of the schedule (linear);
            ``[0, 0]`` makes the target a stop-gradient copy of the current encoder.
        loss: ``smooth_l1`` (the reference code) or ``l2`` (the paper) between prediction and target.
    """

    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    ema: tuple[float, float] = bounded((0.996, 1.0), ge=0, le=1)
    loss: Literal["smooth_l1", "l2"] = "smooth_l1"

    def check_training(self, cfg: Config) -> None:
        """The mask recipe must keep ``method.masks.min_keep`` context patches on the run's patch grid at
        every step (:mod:`openjepa.masks.fit`): a recipe that fits only sometimes would stop the run at
        the same step on every resume.

        Raises:
            ConfigError: the recipe can fail; naming the keys and what to change.
        """
        patch, size = cfg.model.patch_size, cfg.data.image_size
        if size % patch:
            return  # the encoder's builder says so, naming both keys
        try:
            mask_sampler(self.masks, (size // patch, size // patch), check=True)
        except ValueError as err:
            raise ConfigError(str(err)) from None


def mask_sampler(masks: MaskConfig, grid: tuple[int, int], check: bool = False) -> MultiBlockMaskSampler:
    """The sampler of ``method.masks`` on a patch grid; ``check``: prove first that the recipe fits
    (training configs are checked once by :meth:`JEPAConfig.check_training`)."""
    return MultiBlockMaskSampler(
        grid,
        num_targets=masks.num_targets,
        target_scale=masks.target_scale,
        target_aspect=masks.target_aspect,
        context_scale=masks.context_scale,
        context_aspect=masks.context_aspect,
        min_keep=masks.min_keep,
        allow_overlap=masks.allow_overlap,
        trim=masks.trim,
        check=check,
    )


class JEPA(Method):
    """Context encoder, predictor and EMA target encoder, with multi-block masks; subclasses add a loss.

    Args:
        encoder: the context encoder; the target encoder starts as a deep copy of it.
        predictor: the predictor.
        sampler: the multi-block mask sampler (None: the published defaults on the encoder's grid).
        loss: ``"smooth_l1"`` or ``"l2"``.
        ema: EMA momentum at the start and at the end of the schedule.
    """

    encoders: ClassVar[dict[str, str]] = {"target": "target_encoder", "context": "encoder"}
    metric_titles: ClassVar[dict[str, str]] = {
        "ema": "EMA momentum",
        "target_std": "target std (mean per-dimension std of the target features)",
    }

    def __init__(
        self,
        encoder: VisionTransformer,
        predictor: Predictor,
        sampler: MultiBlockMaskSampler | None = None,
        loss: str = "smooth_l1",
        ema: tuple[float, float] = (0.996, 1.0),
    ):
        super().__init__()
        if loss not in JEPA_LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {JEPA_LOSSES}")
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = make_teacher(encoder)
        self.sampler = sampler or MultiBlockMaskSampler(encoder.grid_size)
        self.loss_kind = loss
        self.ema = ema
        self.sigreg: SIGReg | None = None  # a subclass that regularises with SIGReg sets it (use_sigreg)
        self.directions: torch.Tensor | None = None  # that step's SIGReg directions (K, M)
        self._sigreg_dim = 0

    def use_sigreg(self, dim: int, num_slices: int) -> None:
        """Regularise embeddings of width ``dim`` with SIGReg: :meth:`prepare_batch` then draws the step's
        ``num_slices`` directions from ``(seed, step)``, the same on every process and micro-batch."""
        self.sigreg, self._sigreg_dim = SIGReg(num_slices), dim

    def sigreg_of(self, *branches: torch.Tensor) -> torch.Tensor:
        """SIGReg of each branch of embeddings (N, dim) on the step's directions, averaged over branches."""
        if self.sigreg is None or self.directions is None:
            raise RuntimeError("sigreg_of needs use_sigreg() and the directions of prepare_batch")
        reg = self.sigreg
        return torch.stack([sigreg(b, self.directions, reg.t, reg.weights) for b in branches]).mean()

    def draw_directions(self, ctx: StepContext) -> None:
        """The step's SIGReg directions (when the method uses SIGReg)."""
        if self.sigreg is not None:
            g = step_generator(ctx.seed ^ Stream.SLICES, ctx.step)
            directions = random_directions(self._sigreg_dim, self.sigreg.num_slices, g)  # (dim, K)
            self.directions = to_device(directions, ctx.device)

    @classmethod
    def from_config(cls, cfg: Config, in_chans: int) -> JEPA:
        method = cfg.method
        assert isinstance(method, JEPAConfig)
        encoder, predictor, sampler = build_networks(cfg, in_chans)
        return cls(encoder, predictor, sampler, method.loss, method.ema)

    # ---- the step --------------------------------------------------------------------------------------

    def prepare_batch(self, images: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        """Crops plus the step's masks: ``images`` (B, C, H, W), ``context`` (B, Kc), ``targets`` (B, M, Kt)
        and ``context_len`` (B,) on the CPU (see :meth:`masks`).

        The masks are drawn for the whole global batch from ``(seed, step)`` and sliced to this process's
        rows, so any number of processes sees the masks one process would, up to where contexts are cut.
        """
        self.draw_directions(ctx)
        return {"images": ctx.augment(images, ctx.step, ctx.rows, ctx.global_batch), **self.masks(ctx)}

    def masks(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """This process's rows of the step's masks, on the step's device (``context_len`` on the CPU).

        Contexts are cut to the shortest in their group, the rows of one forward pass. Rank ``r`` of ``W``
        holds global rows ``r, r+W, …`` and its micro-batch ``j`` of ``A`` holds every ``A``-th of those
        from its ``j``-th (:meth:`micro_batches`): global rows ``r + W·j + W·A·k``, i.e. group
        ``b mod (W·A)`` of the sampler. So a group is the same rows with the same masks for any ``W`` and
        ``A`` with the same ``W·A``, i.e. the same group size. With one group per process (``A = 1``)
        ``context`` is exact; otherwise shorter groups are padded up to the longest, and
        :meth:`micro_batches` cuts each group to its length, known here without reading the device.

        Raises:
            MaskSamplingError: naming the step and the seed, when an image kept too few context patches.
        """
        world = ctx.rows.step or 1
        generator = step_generator(ctx.seed ^ Stream.MASKS, ctx.step)
        try:
            masks = self.sampler(ctx.global_batch, generator, groups=world * ctx.micro_batches)
        except MaskSamplingError as err:
            raise MaskSamplingError(
                f"masks of step {ctx.step + 1} (run.seed={ctx.seed}) failed, and would again on resuming: "
                f"{err}"
            ) from None
        lengths = masks.context_len[ctx.rows]  # (B,), CPU
        return {
            "context": to_device(masks.context[ctx.rows, : int(lengths.max())], ctx.device),
            "targets": to_device(masks.targets[ctx.rows], ctx.device),  # (B, M, Kt)
            "context_len": lengths,
        }

    def micro_batches(self, batch: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
        """Micro-batch ``j`` takes every ``n``-th row from row ``j`` (the groups of :meth:`masks`), its
        contexts cut to the group's length; ``context_len`` is dropped.

        Raises:
            ValueError: the masks were cut for another number of micro-batches than ``n``.
        """
        lengths = batch["context_len"]
        parts = []
        for j in range(n):
            part = {key: value[j::n] for key, value in batch.items() if key != "context_len"}
            group = lengths[j::n]  # CPU: no device sync
            if (group != group[0]).any():
                raise ValueError(f"the masks were cut for another number of micro-batches than {n}")
            part["context"] = part["context"][:, : int(group[0])]  # (B/n, Kc of this group)
            parts.append(part)
        return parts

    @torch.no_grad()
    def targets(self, images: torch.Tensor, target_idx: torch.Tensor) -> torch.Tensor:
        """Layer-normed target-encoder features at the target blocks: (B, M, Kt, D)."""
        h = self.target_encoder(images)  # (B, N, D)
        h = F.layer_norm(h, (h.shape[-1],))  # normalise each token over features, no affine
        return gather_tokens(h, target_idx)  # (B, M, Kt, D)

    def predict(
        self, images: torch.Tensor, context: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(prediction, target, z)``: predicted and target features (B, M, Kt, D), and the context
        encoder's tokens (B, Kc, D)."""
        target = self.targets(images, targets)
        z = self.encoder(images, context)  # (B, Kc, D)
        prediction = self.predictor(z, context, targets)  # (B, M, Kt, D)
        return prediction, target, z

    @staticmethod
    @torch.no_grad()
    def target_std(target: torch.Tensor) -> torch.Tensor:
        """Mean per-dimension standard deviation of the target features, a first collapse signal."""
        return target.reshape(-1, target.shape[-1]).float().std(dim=0).mean()  # over (B·M·Kt, D)

    def after_optimizer_step(self, step: int, total_steps: int) -> dict[str, float]:
        """EMA step of the target encoder towards the context encoder (momentum 0: an exact copy)."""
        momentum = momentum_at(step, total_steps, *self.ema)
        ema_update(self.target_encoder, self.encoder, momentum)
        return {"ema": momentum}


def build_networks(cfg: Config, in_chans: int) -> tuple[VisionTransformer, Predictor, MultiBlockMaskSampler]:
    """The encoder of ``cfg.model``, the predictor of ``cfg.method.predictor`` (built in that order: the order
    fixes which random numbers initialise which weights) and the mask sampler of ``cfg.method.masks``."""
    assert isinstance(cfg.method, JEPAConfig)
    encoder = build_encoder(cfg.model, cfg.data.image_size, in_chans)
    p = cfg.method.predictor
    predictor = Predictor(
        encoder.grid_size,
        encoder.embed_dim,
        predictor_dim=p.dim,
        depth=p.depth,
        num_heads=p.heads or encoder.num_heads,
        mode=p.mode,
        init=cfg.model.init,
    )
    return encoder, predictor, mask_sampler(cfg.method.masks, encoder.grid_size)
