"""The one place that reads the ``model`` config section: the encoder of a run."""

from __future__ import annotations

from openjepa.config import ModelConfig
from openjepa.models.vit import VIT_SIZES, VisionTransformer, build_vit


def build_encoder(model: ModelConfig, image_size: int, in_chans: int) -> VisionTransformer:
    """The ViT encoder of ``model`` for square images of side ``image_size`` with ``in_chans`` channels.

    Raises:
        ValueError: ``model.name`` is not a known size, or the image size is not a multiple of the patch.
    """
    if model.name not in VIT_SIZES:
        raise ValueError(f"unknown model.name {model.name!r}; choose one of {sorted(VIT_SIZES)}")
    return build_vit(
        model.name,
        img_size=image_size,
        patch_size=model.patch_size,
        in_chans=in_chans,
        embed_dim=model.embed_dim,
        depth=model.depth,
        num_heads=model.num_heads,
        grad_checkpointing=model.grad_checkpointing,
        patch_init_std=model.patch_init_std,
        init=model.init,
        stem=model.stem,
    )
