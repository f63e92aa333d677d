"""Build models from a ``Config`` (the only place that reads model settings from a config)."""

from __future__ import annotations

from openjepa.config import Config
from openjepa.losses.vicreg import VICRegWeights
from openjepa.methods.cjepa import CJEPA
from openjepa.methods.ijepa import IJEPA
from openjepa.models.predictor import Predictor
from openjepa.models.vit import VIT_SIZES, VisionTransformer


def build_encoder(cfg: Config, in_chans: int) -> VisionTransformer:
    """The ViT encoder of ``cfg.model`` for images of ``cfg.data.image_size`` with ``in_chans`` channels."""
    m = cfg.model
    if m.name not in VIT_SIZES:
        raise ValueError(f"unknown model.name {m.name!r}; choose one of {sorted(VIT_SIZES)}")
    size = VIT_SIZES[m.name]
    return VisionTransformer(
        img_size=cfg.data.image_size,
        patch_size=m.patch_size,
        in_chans=in_chans,
        embed_dim=m.embed_dim or size.embed_dim,
        depth=m.depth or size.depth,
        num_heads=m.num_heads or size.num_heads,
        mlp_ratio=size.mlp_ratio,
        grad_checkpointing=m.grad_checkpointing,
        patch_init_std=m.patch_init_std,
    )


def build_model(cfg: Config, in_chans: int) -> IJEPA:
    """Encoder, predictor and EMA target encoder of ``cfg`` (C-JEPA: plus its projector)."""
    encoder = build_encoder(cfg, in_chans)
    m = cfg.model
    predictor = Predictor(
        encoder.grid_size,
        encoder.embed_dim,
        predictor_dim=m.pred_dim,
        depth=m.pred_depth,
        num_heads=m.pred_heads or encoder.num_heads,
        mode=m.pred_mode,
    )
    if cfg.method == "cjepa":
        c = cfg.cjepa
        weights = VICRegWeights(c.beta_vicreg, c.beta_sim, c.beta_std, c.beta_cov, c.gamma, c.eps)
        return CJEPA(encoder, predictor, cfg.optim.loss, c.reading, c.var_cov, c.inv, weights, c.projector)
    return IJEPA(encoder, predictor, loss=cfg.optim.loss)
