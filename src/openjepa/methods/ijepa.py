"""I-JEPA: predict the target encoder's features of masked blocks from a context block.

One step, for images x and masks (context C, target blocks T_1 … T_M):

1. targets: ``h = layer_norm(f_θ̄(x))`` on the full image, no gradient, no affine; take ``h`` at each T_m;
2. context: ``z = f_θ(x restricted to C)``;
3. prediction: ``ŷ_m = g_φ(z, positions of C, positions of T_m)`` for each block;
4. loss: mean smooth-L1 (or L2) between ``ŷ`` and ``h`` over all blocks;
5. after the optimizer step, ``θ̄ ← m·θ̄ + (1 − m)·θ``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from openjepa.losses.jepa import JEPA_LOSSES, jepa_loss
from openjepa.masks.gather import gather_tokens
from openjepa.masks.multiblock import MaskBatch
from openjepa.models.predictor import Predictor
from openjepa.models.vit import VisionTransformer, build_vit
from openjepa.train.ema import ema_update


@dataclass
class JEPAOutput:
    """What one forward pass produces.

    Attributes:
        loss: scalar loss to minimise.
        prediction: predicted target features (B, M, Kt, D).
        target: target features (B, M, Kt, D), layer-normed, detached.
        terms: detached parts of a composite loss, for logging (C-JEPA: ``jepa``, ``inv``, ``var``,
            ``cov``); empty for I-JEPA, whose loss is the JEPA loss.
    """

    loss: torch.Tensor
    prediction: torch.Tensor
    target: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


class IJEPA(nn.Module):
    """Context encoder, EMA target encoder and predictor, with the I-JEPA loss.

    Args:
        encoder: the context encoder; the target encoder starts as a deep copy of it.
        predictor: the predictor.
        loss: ``"smooth_l1"`` (default) or ``"l2"``.
    """

    def __init__(self, encoder: VisionTransformer, predictor: Predictor, loss: str = "smooth_l1"):
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        if loss not in JEPA_LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {JEPA_LOSSES}")
        self.loss_kind = loss

    @torch.no_grad()
    def targets(self, images: torch.Tensor, target_idx: torch.Tensor) -> torch.Tensor:
        """Layer-normed target-encoder features at the target blocks: (B, M, Kt, D)."""
        h = self.target_encoder(images)  # (B, N, D)
        h = F.layer_norm(h, (h.shape[-1],))  # normalise each token over features, no affine
        return gather_tokens(h, target_idx)  # (B, M, Kt, D)

    def forward(self, images: torch.Tensor, masks: MaskBatch) -> JEPAOutput:
        target = self.targets(images, masks.targets)
        z = self.encoder(images, masks.context)  # (B, Kc, D)
        prediction = self.predictor(z, masks.context, masks.targets)  # (B, M, Kt, D)
        return JEPAOutput(jepa_loss(prediction, target, self.loss_kind), prediction, target)

    def update_target(self, momentum: float) -> None:
        """EMA step of the target encoder towards the context encoder (momentum 0: an exact copy)."""
        ema_update(self.target_encoder, self.encoder, momentum)


def build_ijepa(
    model: str = "vit_tiny",
    img_size: int | tuple[int, int] = 224,
    patch_size: int = 16,
    in_chans: int = 3,
    pred_depth: int = 6,
    pred_dim: int = 384,
    pred_mode: str = "separate",
    pred_heads: int | None = None,
    loss: str = "smooth_l1",
    grad_checkpointing: bool = False,
) -> IJEPA:
    """Build an I-JEPA model from a named ViT; the predictor uses the encoder's head count by default."""
    encoder = build_vit(
        model,
        img_size=img_size,
        patch_size=patch_size,
        in_chans=in_chans,
        grad_checkpointing=grad_checkpointing,
    )
    predictor = Predictor(
        encoder.grid_size,
        encoder.embed_dim,
        predictor_dim=pred_dim,
        depth=pred_depth,
        num_heads=pred_heads or encoder.num_heads,
        mode=pred_mode,
    )
    return IJEPA(encoder, predictor, loss=loss)
