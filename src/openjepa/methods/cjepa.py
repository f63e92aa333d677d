"""C-JEPA: I-JEPA plus VICReg regularisation, in each of the three readings of the paper.

The loss is ``L = L_jepa + β_vicreg · (β_sim · L_inv + β_std · L_var + β_cov · L_cov)``; the EMA target
encoder, the masks and the schedules are I-JEPA's. The paper does not say which tensors carry the VICReg
terms, so each reading is an option (``reading``):

* ``"A"`` pooled target predictions: each target block's predicted embeddings are mean-pooled and sent
  through a projector (an MLP expander); VICReg acts between every pair of blocks of the same image (the
  blocks are the "views"), averaged over pairs. Per pair, variance is the mean of the two blocks' terms and
  covariance their sum, so over all pairs: ``L_var = mean_m v_m``, ``L_cov = 2 · mean_m c_m``.
* ``"B"`` pooled context: the JEPA prediction loss is the invariance term (``inv`` cannot be turned off);
  variance and covariance act on the mean-pooled context-encoder embeddings.
* ``"C"`` augmented views: two photometrically augmented views of each image are encoded by the context
  encoder under the step's context mask, mean-pooled and projected; VICReg acts between the two views. The
  JEPA term is computed on the un-augmented image as in I-JEPA, so this reading costs two extra context
  forward passes.

Ablation switches: ``var_cov`` (variance and covariance terms) and ``inv`` (invariance term); EMA on/off is
the optimiser's momentum schedule (``optim.ema: [0, 0]`` makes the target a stop-gradient copy of the
current encoder). Terms that are switched off are still computed, without gradient, and logged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from openjepa.losses.jepa import jepa_loss
from openjepa.losses.vicreg import VICRegWeights, invariance_loss, vicreg_terms
from openjepa.masks.multiblock import MaskBatch
from openjepa.methods.ijepa import IJEPA, JEPAOutput
from openjepa.models.predictor import Predictor
from openjepa.models.vit import VisionTransformer

READINGS = ("A", "B", "C")


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


class CJEPA(IJEPA):
    """I-JEPA with VICReg terms on the tensors of one reading.

    Args:
        encoder, predictor, loss: as ``IJEPA``.
        reading: ``"A"``, ``"B"`` or ``"C"`` (module docstring).
        var_cov: use the variance and covariance terms.
        inv: use the invariance term (reading B: must be True, the JEPA loss is its invariance).
        weights: VICReg coefficients (None: the paper's).
        projector: expander widths (None: ``default_projector(reading, D)``; empty: none).
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        predictor: Predictor,
        loss: str = "smooth_l1",
        reading: str = "C",
        var_cov: bool = True,
        inv: bool = True,
        weights: VICRegWeights | None = None,
        projector: Sequence[int] | None = None,
    ):
        super().__init__(encoder, predictor, loss)
        if reading not in READINGS:
            raise ValueError(f"unknown C-JEPA reading {reading!r}; choose one of {READINGS}")
        if reading == "B" and not inv:
            raise ValueError(
                "reading B uses the JEPA loss itself as the invariance term, so cjepa.inv cannot be false; "
                "B without variance/covariance is plain I-JEPA (method: ijepa)"
            )
        if not (var_cov or inv):
            raise ValueError("cjepa.var_cov and cjepa.inv are both false: that is I-JEPA (method: ijepa)")
        self.reading, self.var_cov, self.inv = reading, var_cov, inv
        self.weights = weights or VICRegWeights()
        dims = default_projector(reading, encoder.embed_dim) if projector is None else tuple(projector)
        self.projector = build_projector(encoder.embed_dim, dims)

    def forward(
        self, images: torch.Tensor, masks: MaskBatch, views: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> JEPAOutput:
        """JEPA loss plus the reading's VICReg term; ``views`` (two augmented batches) only for reading C."""
        target = self.targets(images, masks.targets)
        z = self.encoder(images, masks.context)  # (B, Kc, D)
        prediction = self.predictor(z, masks.context, masks.targets)  # (B, M, Kt, D)
        jepa = jepa_loss(prediction, target, self.loss_kind)
        w = self.weights
        if self.reading == "A":
            inv, var, cov = self._blocks(prediction)
        elif self.reading == "B":
            inv = jepa
            with torch.set_grad_enabled(self.var_cov and torch.is_grad_enabled()):
                var, cov = vicreg_terms([self.projector(z.mean(dim=1))], w.gamma, w.eps)
        else:
            if views is None:
                raise ValueError("reading C needs two augmented views of the batch (views=(v1, v2))")
            inv, var, cov = self._views(views, masks.context)
        reg = torch.zeros((), device=jepa.device)
        if self.inv and self.reading != "B":  # B's invariance is the JEPA loss, already in L
            reg = reg + w.sim * inv
        if self.var_cov:
            reg = reg + w.std * var + w.cov * cov
        loss = jepa + w.vicreg * reg
        terms = {"jepa": jepa.detach(), "inv": inv.detach(), "var": var.detach(), "cov": cov.detach()}
        return JEPAOutput(loss, prediction, target, terms)

    def _blocks(self, prediction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reading A: VICReg between every pair of target blocks' pooled, projected predictions."""
        w = self.weights
        b, m = prediction.shape[:2]
        if m < 2:
            raise ValueError("reading A needs at least two target blocks (masks.num_targets ≥ 2)")
        p = self.projector(prediction.mean(dim=2).flatten(0, 1)).unflatten(0, (b, m)).float()  # (B, M, E)
        i, j = torch.triu_indices(m, m, offset=1, device=p.device)
        with torch.set_grad_enabled(self.inv and torch.is_grad_enabled()):
            inv = invariance_loss(p[:, i], p[:, j])  # mean over pairs, samples and dimensions
        with torch.set_grad_enabled(self.var_cov and torch.is_grad_enabled()):
            var, cov_sum = vicreg_terms(list(p.unbind(dim=1)), w.gamma, w.eps)
        return inv, var, cov_sum * 2.0 / m

    def _views(
        self, views: tuple[torch.Tensor, torch.Tensor], context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reading C: VICReg between the pooled, projected context embeddings of two augmented views."""
        w = self.weights
        v1, v2 = views
        both = self.encoder(torch.cat([v1, v2]), torch.cat([context, context]))  # (2B, Kc, D)
        z_a, z_b = self.projector(both.mean(dim=1)).float().chunk(2)
        with torch.set_grad_enabled(self.inv and torch.is_grad_enabled()):
            inv = invariance_loss(z_a, z_b)
        with torch.set_grad_enabled(self.var_cov and torch.is_grad_enabled()):
            var, cov = vicreg_terms([z_a, z_b], w.gamma, w.eps)
        return inv, var, cov
