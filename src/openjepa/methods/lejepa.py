"""LeJEPA (Balestriero & LeCun, arXiv 2511.08544): one encoder, no teacher, no predictor network; the views of
an image are pulled together, and SIGReg keeps the embeddings an isotropic Gaussian.

One step, for each image of the batch:

1. ``global_views`` crops at the run's image size and ``local_views`` smaller crops (``local_size``), each
   a random resized crop (+ flip) drawn for the global batch from ``(seed, step, view)``; with
   ``photometric``, each view then gets colour jitter, grayscale, blur and solarization (the two global
   views VICReg's asymmetric pair, the local ones blur with probability 0.5), drawn per process;
2. every view through the encoder (the local ones at their own, smaller grid of patches), tokens
   average-pooled, then through the projector: ``z`` (B, V, K);
3. prediction term: the mean squared distance of every view's ``z`` to the mean of the global views' ``z``;
4. SIGReg (:mod:`openjepa.losses.sigreg`) of each view's ``z`` over the batch (all processes' rows
   together), on ``num_slices`` random directions shared by every process, averaged over the views;
5. ``loss = λ·SIGReg + (1 − λ)·prediction``.

    method:
      name: lejepa
      global_views: 2
      local_views: 6
      lamb: 0.05

Only λ = 0.05 comes from the paper's public examples (SPEC.md); the view counts, crop scales, projector
widths and slice count below are this implementation's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from openjepa.config import Config, ConfigError, MethodConfig, bounded
from openjepa.data.augment import PretrainAugment
from openjepa.data.photometric import PhotometricAugment, vicreg_views
from openjepa.data.transforms import normalize
from openjepa.losses.sigreg import epps_pulley, random_directions, t_grid
from openjepa.methods.base import Method, StepContext, StepOutput
from openjepa.methods.cjepa import build_projector
from openjepa.models.build import build_encoder
from openjepa.models.vit import VisionTransformer
from openjepa.rng import step_generator
from openjepa.utils.device_copy import to_device

VIEW_STREAM = 0x1E7E_0000  # XOR-ed into the run seed, plus the view's index: one crop stream per view
SLICE_STREAM = 0x1E7E_5110  # the SIGReg directions of a step
PHOTOMETRIC_STREAM = 0x1E7E_1000  # plus the view's index: the photometric draws of a view, per process


@dataclass
class LeJEPAConfig(MethodConfig):
    """The ``method:`` section of LeJEPA.

    Attributes:
        global_views: crops per image at the run's image size (``data.image_size``).
        local_views: smaller crops per image (0: none).
        local_size: side of the local crops in pixels, a multiple of ``model.patch_size`` (null: 3/7 of
            the image size, rounded to a multiple of the patch, as 96 of 224).
        global_scale, local_scale: area ranges of the global and local crops.
        projector: widths of the projector MLP after the pooled encoder tokens; the last is the dimension
            SIGReg and the prediction term see.
        lamb: λ, the weight of SIGReg against the prediction term (``λ·SIGReg + (1 − λ)·prediction``).
        num_slices: random directions per step of SIGReg.
        t_max, t_points: the grid of SIGReg's integral over t (trapezoid rule on [−t_max, t_max]).
        photometric: after the crops, colour jitter, grayscale, blur and solarization per view (the
            multi-crop recipes' augmentations); drawn per process from (seed, step, rank, view), so a
            ``torchrun`` run no longer equals one process on the same global batch.
    """

    name: str = "lejepa"
    global_views: int = bounded(2, ge=1)
    local_views: int = bounded(6, ge=0)
    local_size: int | None = bounded(None, ge=1)
    global_scale: tuple[float, float] = bounded((0.3, 1.0), gt=0, le=1, ascending=True)
    local_scale: tuple[float, float] = bounded((0.05, 0.3), gt=0, le=1, ascending=True)
    projector: tuple[int, ...] = bounded((512, 128), ge=1)
    lamb: float = bounded(0.05, ge=0, le=1)
    num_slices: int = bounded(256, ge=1)
    t_max: float = bounded(5.0, gt=0)
    t_points: int = bounded(17, ge=2)
    photometric: bool = False

    def check(self, cfg: Config) -> None:
        """The local crops must be a whole number of patches; the projector needs a layer.

        Raises:
            ConfigError: naming the keys and what to change.
        """
        if not self.projector:
            raise ConfigError("method.projector must list at least one width (the embedding SIGReg sees)")
        size, patch = local_size(self, cfg.data.image_size, cfg.model.patch_size), cfg.model.patch_size
        if size % patch or size > cfg.data.image_size:
            raise ConfigError(
                f"method.local_size={size} must be a multiple of model.patch_size={patch} and at most "
                f"data.image_size={cfg.data.image_size}"
            )


def local_size(method: LeJEPAConfig, image_size: int, patch: int) -> int:
    """The local crops' side: ``method.local_size``, or 3/7 of the image rounded to whole patches."""
    if method.local_size is not None:
        return method.local_size
    return max(patch, round(image_size * 3 / 7 / patch) * patch)


class LeJEPA(Method):
    """One encoder and a projector, trained with the prediction term and SIGReg (see the module docstring).

    Args:
        encoder: the ViT (its image size is the global views' size).
        projector: maps pooled tokens (B, D) to embeddings (B, K).
        global_views, local_views: crops per image.
        local_size: side of the local crops.
        global_scale, local_scale: area ranges of the crops.
        lamb: λ.
        num_slices, t_max, t_points: SIGReg's settings.
        photometric: photometric augmentations per view after the crops.
    """

    name = "lejepa"
    config_class = LeJEPAConfig
    encoders: ClassVar[dict[str, str]] = {"encoder": "encoder"}
    metric_titles: ClassVar[dict[str, str]] = {
        "sigreg": "SIGReg (distance of the embeddings from an isotropic Gaussian)",
        "prediction": "prediction term (views to the mean of the global views)",
    }

    t: torch.Tensor
    weights: torch.Tensor

    def __init__(
        self,
        encoder: VisionTransformer,
        projector: nn.Module,
        global_views: int = 2,
        local_views: int = 6,
        local_size: int = 12,
        global_scale: tuple[float, float] = (0.3, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.3),
        lamb: float = 0.05,
        num_slices: int = 256,
        t_max: float = 5.0,
        t_points: int = 17,
        photometric: bool = False,
    ):
        super().__init__()
        self.encoder, self.projector = encoder, projector
        self.global_views, self.local_views, self.local_size = global_views, local_views, local_size
        self.global_scale, self.local_scale = global_scale, local_scale
        self.lamb, self.num_slices = lamb, num_slices
        t, weights = t_grid(t_max, t_points)
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("weights", weights, persistent=False)
        self.directions: torch.Tensor | None = None  # this step's SIGReg directions, set by prepare_batch
        self.photometric: list[PhotometricAugment] | None = None
        if photometric:
            first, second = vicreg_views()  # the asymmetric pair of the global views, then the locals'
            local = PhotometricAugment(blur_p=0.5, solarize_p=0.0)
            pairs = [first, second] * global_views
            self.photometric = pairs[:global_views] + [local] * local_views
        with torch.no_grad():
            self.embedding_dim = int(projector(torch.zeros(2, encoder.embed_dim)).shape[-1])  # K

    @classmethod
    def from_config(cls, cfg: Config, in_chans: int) -> LeJEPA:
        m = cfg.method
        assert isinstance(m, LeJEPAConfig)
        encoder = build_encoder(cfg.model, cfg.data.image_size, in_chans)
        projector = build_projector(encoder.embed_dim, m.projector)
        return cls(
            encoder,
            projector,
            m.global_views,
            m.local_views,
            local_size(m, cfg.data.image_size, cfg.model.patch_size),
            m.global_scale,
            m.local_scale,
            m.lamb,
            m.num_slices,
            m.t_max,
            m.t_points,
            m.photometric,
        )

    @classmethod
    def describe(cls, cfg: MethodConfig) -> str:
        assert isinstance(cfg, LeJEPAConfig)
        return f"lejepa ({cfg.global_views} global + {cfg.local_views} local views, λ={cfg.lamb:g})"

    def prepare_batch(self, images: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        """``global`` (B, Vg, C, S, S) and ``local`` (B, Vl, C, s, s) views, each view its own crops drawn
        for the global batch from ``(seed, step, view)``; and the step's SIGReg directions."""
        a = ctx.augment
        views = []
        for v in range(self.global_views + self.local_views):
            is_global = v < self.global_views
            size = a.size if is_global else self.local_size
            scale = self.global_scale if is_global else self.local_scale
            crop = PretrainAugment(size, a.mean, a.std, scale, a.flip, ctx.seed ^ (VIEW_STREAM + v))
            if self.photometric is None:
                views.append(crop(images, ctx.step, ctx.rows, ctx.global_batch))  # (B, C, size, size)
                continue
            x = crop.crops(images, ctx.step, ctx.rows, ctx.global_batch)  # in [0, 1]
            x = self.photometric[v](
                x, step_generator(ctx.seed ^ (PHOTOMETRIC_STREAM + v), ctx.step, ctx.rank)
            )
            views.append(normalize(x, a.mean, a.std))
        g = step_generator(ctx.seed ^ SLICE_STREAM, ctx.step)
        self.directions = to_device(random_directions(self.embedding_dim, self.num_slices, g), ctx.device)
        batch = {"global": torch.stack(views[: self.global_views], dim=1)}  # (B, Vg, C, S, S)
        if self.local_views:
            batch["local"] = torch.stack(views[self.global_views :], dim=1)  # (B, Vl, C, s, s)
        return batch

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        """Views (B, V, C, H, W) → projected embeddings (B, V, K)."""
        b, v = views.shape[:2]
        tokens = self.encoder.forward_any_size(views.flatten(0, 1))  # (B·V, N, D)
        return self.projector(tokens.mean(dim=1)).unflatten(0, (b, v))  # (B, V, K)

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        z = self.embed(batch["global"])  # (B, Vg, K)
        if "local" in batch:
            z = torch.cat([z, self.embed(batch["local"])], dim=1)  # (B, V, K)
        z = z.float()
        center = z[:, : self.global_views].mean(dim=1, keepdim=True)  # (B, 1, K)
        prediction = (z - center).square().mean()
        if self.directions is None:
            raise RuntimeError("LeJEPA.forward needs the directions of prepare_batch")
        with torch.autocast(z.device.type, enabled=False):
            x = (z @ self.directions).flatten(1)  # (B, V·M): every view's projections, one column each
            reg = epps_pulley(x, self.t, self.weights).mean()  # over views and directions
        loss = self.lamb * reg + (1 - self.lamb) * prediction
        return StepOutput(loss, {"sigreg": reg.detach(), "prediction": prediction.detach()})
