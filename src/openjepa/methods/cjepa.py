"""C-JEPA (Mo & Tong, 2024): I-JEPA plus VICReg regularisation, in each of the three readings of the paper.

The loss is ``L = L_jepa + β_vicreg · (β_sim · L_inv + β_std · L_var + β_cov · L_cov)``; the EMA target
encoder, the masks and the schedules are I-JEPA's (the shared JEPA core, :mod:`openjepa.methods.jepa`).
The paper does not say which tensors carry the VICReg terms, so each reading is an option (``reading``):

* ``"A"`` pooled target predictions: each target block's predicted embeddings are mean-pooled and sent
  through a projector (an MLP expander); VICReg acts between every pair of blocks of the same image (the
  blocks are the "views"), averaged over pairs. Per pair, variance is the mean of the two blocks' terms and
  covariance their sum, so over all pairs: ``L_var = mean_m v_m``, ``L_cov = 2 · mean_m c_m``.
* ``"B"`` pooled context: the JEPA prediction loss is the invariance term (``inv`` cannot be turned off);
  variance and covariance act on the mean-pooled context-encoder embeddings.
* ``"C"`` augmented views: two photometrically augmented views of each image are encoded by the context
  encoder under the step's context mask, mean-pooled and projected; VICReg acts between the two views. The
  JEPA term is computed on the un-augmented image as in I-JEPA, so this reading costs two extra context
  forward passes. By default both views are photometric variants of the step's crop; ``view_crop_scale``
  gives each view its own random resized crop of the image instead (and ``view_flip`` its own flip), the
  geometric part of VICReg's augmentation.

Ablation switches: ``var_cov`` (variance and covariance terms) and ``inv`` (invariance term); EMA on/off is
the momentum schedule (``method.ema: [0, 0]`` makes the target a stop-gradient copy of the current
encoder). Terms that are switched off are still computed, without gradient, and logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from openjepa.config import Config, ConfigError, MethodConfig, bounded
from openjepa.data.photometric import ViewPairAugment
from openjepa.data.transforms import normalize, random_horizontal_flip, random_resized_crop, to_float
from openjepa.losses.jepa import jepa_loss
from openjepa.losses.vicreg import VICRegWeights, invariance_loss, vicreg_terms
from openjepa.masks.multiblock import MultiBlockMaskSampler
from openjepa.methods.base import StepContext, StepOutput
from openjepa.methods.jepa import JEPA, JEPAConfig, build_networks
from openjepa.models.predictor import Predictor
from openjepa.models.vit import VisionTransformer
from openjepa.rng import Stream, step_generator

READINGS = ("A", "B", "C")
_PAPER = VICRegWeights()  # the published coefficients, defined once in openjepa.losses.vicreg


@dataclass
class CJEPAConfig(JEPAConfig):
    """C-JEPA: the JEPA keys plus one VICReg term.

    Attributes:
        reading: which tensors carry VICReg: ``A`` pooled target predictions through a projector, between
            target blocks; ``B`` pooled context embeddings, the JEPA loss being the invariance; ``C`` two
            photometrically augmented views. C is the default: it learned fastest in the Fashion-MNIST
            study of docs/results.md (B second, at no extra cost per step; A no better than I-JEPA).
        var_cov: variance and covariance terms on; they are statistics of the step's whole batch (gathered
            over processes), so they refuse ``optim.grad_accum`` > 1 (unless ``beta_vicreg`` is 0).
        inv: invariance term on (reading B: always, it is the JEPA loss).
        beta_vicreg: weight of the whole VICReg term.
        beta_sim, beta_std, beta_cov: weights of invariance, variance and covariance inside it.
        gamma, eps: target standard deviation and stabiliser of the variance term.
        projector: expander widths after pooling (null: 4·D, 4·D for reading A, none for B and C; [] none).
        regulariser: what keeps the reading's embeddings spread out: ``vicreg`` (the variance and
            covariance terms) or ``sigreg`` (SIGReg, :mod:`openjepa.losses.sigreg`, on the same tensors, each
            branch's over the batch, averaged; weighted by ``beta_sigreg`` instead of the VICReg weights).
        beta_sigreg: weight of SIGReg in the loss (``regulariser: sigreg``; not tuned).
        sigreg_slices: random directions per step of SIGReg.
        view_crop_scale: reading C: each view's own random-resized-crop area range, drawn independently
            for the two views from the image as loaded (null: both views are photometric variants of the
            step's crop, ``data.crop_scale``). Independent crops make the invariance term geometric too.
        view_flip: reading C with ``view_crop_scale``: each view is also flipped horizontally with
            probability 0.5, independently.
    """

    name: str = "cjepa"
    reading: Literal["A", "B", "C"] = "C"
    var_cov: bool = True
    inv: bool = True
    beta_vicreg: float = bounded(_PAPER.vicreg, ge=0)
    beta_sim: float = bounded(_PAPER.sim, ge=0)
    beta_std: float = bounded(_PAPER.std, ge=0)
    beta_cov: float = bounded(_PAPER.cov, ge=0)
    gamma: float = bounded(_PAPER.gamma, gt=0)
    eps: float = bounded(_PAPER.eps, gt=0)
    projector: tuple[int, ...] | None = bounded(None, ge=1)
    regulariser: Literal["vicreg", "sigreg"] = "vicreg"
    beta_sigreg: float = bounded(0.01, ge=0)
    sigreg_slices: int = bounded(256, ge=1)
    view_crop_scale: tuple[float, float] | None = bounded(None, gt=0, le=1, ascending=True)
    view_flip: bool = False

    def check(self, cfg: Config) -> None:
        """The switches must leave a C-JEPA, and reading A needs two target blocks.

        Raises:
            ConfigError: naming the keys and what to change.
        """
        if self.reading == "B" and not self.inv:
            raise ConfigError(
                "method.inv=false with method.reading=B: reading B uses the JEPA loss itself as the "
                "invariance term; B without variance/covariance is plain I-JEPA (method=ijepa)"
            )
        if not (self.var_cov or self.inv):
            raise ConfigError(
                "method.var_cov and method.inv are both false: that is plain I-JEPA (method=ijepa)"
            )
        if self.reading == "A" and self.masks.num_targets < 2:
            raise ConfigError(
                "method.reading=A puts VICReg between the target blocks of an image, so it needs "
                f"method.masks.num_targets >= 2, got {self.masks.num_targets}"
            )
        if self.reading != "C" and (self.view_crop_scale is not None or self.view_flip):
            raise ConfigError(
                f"method.view_crop_scale and method.view_flip crop the two views of reading C; with "
                f"method.reading={self.reading} there are no views: remove them or set method.reading=C"
            )
        if self.view_flip and self.view_crop_scale is None:
            raise ConfigError(
                "method.view_flip=true flips the views' own crops: set method.view_crop_scale too "
                "(e.g. [0.3, 1.0]), or data.flip=true to flip the step's shared crop"
            )

    def check_training(self, cfg: Config) -> None:
        """The JEPA checks, and VICReg's batch statistics must see the whole batch (no gradient
        accumulation while they are on).

        Raises:
            ConfigError: naming the keys and what to change.
        """
        super().check_training(cfg)
        accum = cfg.optim.grad_accum
        if self.regulariser == "sigreg":
            if accum > 1 and self.var_cov and self.beta_sigreg > 0:
                raise ConfigError(
                    f"optim.grad_accum={accum} with method.regulariser=sigreg: SIGReg is a statistic of the "
                    "whole batch, so accumulation does not reproduce the batch of optim.batch_size; set "
                    "optim.grad_accum=1 (a larger per-process batch or more processes) or "
                    "method.beta_sigreg=0"
                )
            return
        if accum > 1 and self.var_cov and self.beta_vicreg > 0 and (self.beta_std > 0 or self.beta_cov > 0):
            # Variance and covariance are statistics over the batch: per micro-batch they are other numbers
            # than over the step's batch, and averaging them over micro-batches does not give those.
            raise ConfigError(
                f"optim.grad_accum={accum} with C-JEPA's variance/covariance terms (method.var_cov, "
                "method.beta_vicreg): they are computed over each micro-batch, so accumulation does not "
                "reproduce the batch of optim.batch_size; set optim.grad_accum=1 and fit the batch with a "
                "larger per-process batch or more processes (the terms gather every process's rows), or "
                "set method.beta_vicreg=0"
            )


def build_projector(in_dim: int, dims: Sequence[int]) -> nn.Module:
    """MLP expander ``in_dim → dims[0] → … → dims[-1]``: Linear, LayerNorm, GELU between layers.

    LayerNorm rather than VICReg's BatchNorm, so the projector's output does not depend on how the batch is
    split over processes. The last layer has no bias: every VICReg term is blind to a shift shared by all
    embeddings, so its gradient would be rounding noise that Adam turns into full-size steps. An empty
    ``dims`` gives the identity.
    """
    if not dims:
        return nn.Identity()
    layers: list[nn.Module] = []
    prev = in_dim
    for i, width in enumerate(dims):
        last = i == len(dims) - 1
        layers.append(nn.Linear(prev, width, bias=not last))
        if not last:
            layers += [nn.LayerNorm(width), nn.GELU()]
        prev = width
    return nn.Sequential(*layers)


def default_projector(reading: str, embed_dim: int) -> tuple[int, ...]:
    """Reading A's expander: two layers of 4 × the embedding width; B and C use the embeddings as they are."""
    return (4 * embed_dim, 4 * embed_dim) if reading == "A" else ()


class CJEPA(JEPA):
    """The JEPA networks with the latent-regression loss plus VICReg terms on the tensors of one reading.

    Args:
        encoder, predictor, sampler, loss, ema: as :class:`openjepa.methods.jepa.JEPA`.
        reading: ``"A"``, ``"B"`` or ``"C"`` (module docstring).
        var_cov: use the variance and covariance terms.
        inv: use the invariance term (reading B: must be True, the JEPA loss is its invariance).
        weights: VICReg coefficients (None: the paper's).
        projector: expander widths (None: ``default_projector(reading, D)``; empty: none).
    """

    name = "cjepa"
    config_class = CJEPAConfig
    metric_titles: ClassVar[dict[str, str]] = {
        **JEPA.metric_titles,
        "loss_jepa": "JEPA loss (without VICReg)",
        "vicreg_inv": "VICReg invariance",
        "vicreg_var": "VICReg variance",
        "vicreg_cov": "VICReg covariance",
        "sigreg": "SIGReg (in place of variance and covariance)",
    }

    def __init__(
        self,
        encoder: VisionTransformer,
        predictor: Predictor,
        sampler: MultiBlockMaskSampler | None = None,
        loss: str = "smooth_l1",
        ema: tuple[float, float] = (0.996, 1.0),
        reading: str = "C",
        var_cov: bool = True,
        inv: bool = True,
        weights: VICRegWeights | None = None,
        projector: Sequence[int] | None = None,
        regulariser: str = "vicreg",
        beta_sigreg: float = 0.01,
        sigreg_slices: int = 256,
        view_crop_scale: tuple[float, float] | None = None,
        view_flip: bool = False,
    ):
        super().__init__(encoder, predictor, sampler, loss, ema)
        if reading not in READINGS:
            raise ValueError(f"unknown C-JEPA reading {reading!r}; choose one of {READINGS}")
        if reading == "B" and not inv:
            raise ValueError(
                "reading B uses the JEPA loss itself as the invariance term, so method.inv cannot be false; "
                "B without variance/covariance is plain I-JEPA (its own method)"
            )
        if not (var_cov or inv):
            raise ValueError(
                "method.var_cov and method.inv are both false: that is plain I-JEPA (its own method)"
            )
        self.reading, self.var_cov, self.inv = reading, var_cov, inv
        self.weights = weights or VICRegWeights()
        dims = default_projector(reading, encoder.embed_dim) if projector is None else tuple(projector)
        self.projector = build_projector(encoder.embed_dim, dims)
        self.views = ViewPairAugment() if reading == "C" else None
        if view_crop_scale is not None and reading != "C":
            raise ValueError("view_crop_scale crops the two views of reading C")
        if view_flip and view_crop_scale is None:
            raise ValueError("view_flip flips the views' own crops: give view_crop_scale too")
        self.view_crop_scale: tuple[float, float] | None = (
            None if view_crop_scale is None else (float(view_crop_scale[0]), float(view_crop_scale[1]))
        )
        self.view_flip = view_flip
        if regulariser not in ("vicreg", "sigreg"):
            raise ValueError(f"unknown C-JEPA regulariser {regulariser!r}; choose vicreg or sigreg")
        self.regulariser, self.beta_sigreg = regulariser, beta_sigreg
        if regulariser == "sigreg":
            with torch.no_grad():
                width = int(self.projector(torch.zeros(2, encoder.embed_dim)).shape[-1])
            self.use_sigreg(width, sigreg_slices)

    @classmethod
    def from_config(cls, cfg: Config, in_chans: int) -> CJEPA:
        c = cfg.method
        assert isinstance(c, CJEPAConfig)
        encoder, predictor, sampler = build_networks(cfg, in_chans)
        weights = VICRegWeights(c.beta_vicreg, c.beta_sim, c.beta_std, c.beta_cov, c.gamma, c.eps)
        return cls(
            encoder,
            predictor,
            sampler,
            c.loss,
            c.ema,
            c.reading,
            c.var_cov,
            c.inv,
            weights,
            c.projector,
            c.regulariser,
            c.beta_sigreg,
            c.sigreg_slices,
            c.view_crop_scale,
            c.view_flip,
        )

    @classmethod
    def describe(cls, cfg: MethodConfig) -> str:
        assert isinstance(cfg, CJEPAConfig)
        on = {True: "on", False: "off"}
        spread = "var/cov" if cfg.regulariser == "vicreg" else f"SIGReg (β {cfg.beta_sigreg:g})"
        return (
            f"cjepa (reading {cfg.reading}, {spread} {on[cfg.var_cov]}, inv {on[cfg.inv]}, "
            f"β_vicreg {cfg.beta_vicreg:g})"
        )

    @classmethod
    def resume_key(cls, cfg: MethodConfig) -> str:
        assert isinstance(cfg, CJEPAConfig)
        extra = "" if cfg.regulariser == "vicreg" else ", regulariser=sigreg"
        return f"cjepa (reading={cfg.reading}, var_cov={cfg.var_cov}, inv={cfg.inv}{extra})"

    def prepare_batch(self, images: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        """The JEPA inputs; reading C adds two photometric views (``view1``, ``view2``) of the step's crops,
        or, with ``view_crop_scale``, of two crops of their own.

        The view parameters are drawn per process from ``(seed, step, rank)``: unlike crops and masks, they
        depend on how the global batch is split over processes.
        """
        if self.views is None:
            return super().prepare_batch(images, ctx)
        self.draw_directions(ctx)
        crops = ctx.augment.crops(images, ctx.step, ctx.rows, ctx.global_batch)
        g = step_generator(ctx.seed ^ Stream.VIEWS, ctx.step, ctx.rank)
        if self.view_crop_scale is None:
            v1, v2 = self.views(crops, g)
        else:
            c1, c2 = self._view_crops(images, ctx)
            v1, v2 = self.views.first(c1, g), self.views.second(c2, g)  # the pair's order of draws
        m, s = ctx.augment.mean, ctx.augment.std
        return {
            "images": normalize(crops, m, s),
            **self.masks(ctx),
            "view1": normalize(v1, m, s),
            "view2": normalize(v2, m, s),
        }

    def _view_crops(self, images: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent random resized crops (and flips, with ``view_flip``) of each image, float in
        [0, 1] at the run's image size, drawn from ``(seed, step, rank)``: (B, C, S, S) each."""
        assert self.view_crop_scale is not None
        x = to_float(images)  # (B, C, H, W)
        g = step_generator(ctx.seed ^ Stream.VIEW_CROPS, ctx.step, ctx.rank)
        views = []
        for _ in range(2):
            v = random_resized_crop(x, ctx.augment.size, self.view_crop_scale, generator=g)  # (B, C, S, S)
            views.append(random_horizontal_flip(v, 0.5, g) if self.view_flip else v)
        return views[0], views[1]

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        """JEPA loss plus the reading's VICReg term; reading C needs ``view1`` and ``view2`` in the batch."""
        context = batch["context"]
        prediction, target, z = self.predict(batch["images"], context, batch["targets"])
        jepa = jepa_loss(prediction, target, self.loss_kind)
        w = self.weights
        if self.reading == "A":
            inv, var, cov = self._blocks(prediction)
        elif self.reading == "B":
            inv = jepa
            with torch.set_grad_enabled(self.var_cov and torch.is_grad_enabled()):
                var, cov = self._spread([self.projector(z.mean(dim=1))])
        else:
            if "view1" not in batch or "view2" not in batch:
                raise ValueError("reading C needs two augmented views of the batch (view1, view2)")
            inv, var, cov = self._views((batch["view1"], batch["view2"]), context)
        reg = torch.zeros((), device=jepa.device)
        if self.inv and self.reading != "B":  # B's invariance is the JEPA loss, already in L
            reg = reg + w.sim * inv
        sigreg_on = self.regulariser == "sigreg"
        if self.var_cov and not sigreg_on:
            reg = reg + w.std * var + w.cov * cov
        loss = jepa + w.vicreg * reg
        if self.var_cov and sigreg_on:
            loss = loss + self.beta_sigreg * var  # var holds SIGReg (see _spread)
        metrics = {
            "target_std": self.target_std(target),
            "loss_jepa": jepa.detach(),
            "vicreg_inv": inv.detach(),
        }
        if sigreg_on:
            metrics["sigreg"] = var.detach()
        else:
            metrics.update(vicreg_var=var.detach(), vicreg_cov=cov.detach())
        return StepOutput(loss, metrics)

    def _spread(self, branches: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """What keeps the branches (each (N, E)) spread out: VICReg's (variance, covariance), or with
        ``regulariser: sigreg`` (SIGReg averaged over the branches, 0)."""
        if self.regulariser == "sigreg":
            reg = self.sigreg_of(*branches)
            return reg, torch.zeros_like(reg)
        return vicreg_terms(branches, self.weights.gamma, self.weights.eps)

    def _blocks(self, prediction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reading A: VICReg between every pair of target blocks' pooled, projected predictions."""
        b, m = prediction.shape[:2]
        if m < 2:
            raise ValueError("reading A needs at least two target blocks (masks.num_targets ≥ 2)")
        p = self.projector(prediction.mean(dim=2).flatten(0, 1)).unflatten(0, (b, m)).float()  # (B, M, E)
        i, j = torch.triu_indices(m, m, offset=1, device=p.device)
        with torch.set_grad_enabled(self.inv and torch.is_grad_enabled()):
            inv = invariance_loss(p[:, i], p[:, j])  # mean over pairs, samples and dimensions
        with torch.set_grad_enabled(self.var_cov and torch.is_grad_enabled()):
            var, cov_sum = self._spread(list(p.unbind(dim=1)))
        return inv, var, cov_sum * 2.0 / m

    def _views(
        self, views: tuple[torch.Tensor, torch.Tensor], context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reading C: VICReg between the pooled, projected context embeddings of two augmented views."""
        v1, v2 = views
        both = self.encoder(torch.cat([v1, v2]), torch.cat([context, context]))  # (2B, Kc, D)
        z_a, z_b = self.projector(both.mean(dim=1)).float().chunk(2)
        with torch.set_grad_enabled(self.inv and torch.is_grad_enabled()):
            inv = invariance_loss(z_a, z_b)
        with torch.set_grad_enabled(self.var_cov and torch.is_grad_enabled()):
            var, cov = self._spread([z_a, z_b])
        return inv, var, cov
