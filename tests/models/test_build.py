"""build_encoder: the encoder of a ``model`` config section."""

import pytest
import torch

from openjepa.config import ModelConfig
from openjepa.models.build import build_encoder
from openjepa.models.vit import VIT_SIZES


def test_named_size_is_kept_where_the_section_says_null():
    enc = build_encoder(ModelConfig(name="vit_small", patch_size=8), image_size=32, in_chans=3)
    size = VIT_SIZES["vit_small"]
    assert enc.embed_dim == size.embed_dim and len(enc.blocks) == size.depth
    assert enc.blocks[0].attn.num_heads == size.num_heads
    assert enc.grid_size == (4, 4) and enc.patch_embed.proj.in_channels == 3


def test_overrides_and_options_reach_the_encoder():
    model = ModelConfig(
        name="vit_tiny", patch_size=4, depth=2, embed_dim=32, num_heads=2, grad_checkpointing=True
    )
    enc = build_encoder(model, image_size=16, in_chans=1)
    assert enc.embed_dim == 32 and len(enc.blocks) == 2 and enc.blocks[0].attn.num_heads == 2
    assert enc.grad_checkpointing
    assert enc(torch.randn(2, 1, 16, 16)).shape == (2, 16, 32)


def test_unknown_name_and_bad_image_size():
    with pytest.raises(ValueError, match="unknown model.name 'vit_colossal'"):
        build_encoder(ModelConfig(name="vit_colossal"), image_size=16, in_chans=1)
    with pytest.raises(ValueError, match="not divisible by patch size"):
        build_encoder(ModelConfig(patch_size=5), image_size=16, in_chans=1)
