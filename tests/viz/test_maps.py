"""Attention and PCA maps of encoders and the visualize PNG grid (openjepa.viz.maps)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from openjepa.api import pretrain
from openjepa.models.vit import VisionTransformer
from openjepa.viz.maps import attention_maps, pca_maps, visualize
from tests.helpers import TINY
from tests.viz.helpers import grid_size


def tiny_vit(img_size, patch_size, in_chans=1, depth=2, dim=16, heads=2, **kw) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size, patch_size, in_chans, dim, depth, heads, **kw).eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("viz") / "run"
    pretrain(None, [*TINY, "run.max_steps=3", f"run.out_dir={out}"])
    return out


# --------------------------------------------------------------------------------------------------
# Maps
# --------------------------------------------------------------------------------------------------


def test_attention_map_lights_up_the_patch_every_query_attends_to():
    enc = tiny_vit(30, 5, depth=2, dim=16, heads=1)  # 6x6 grid
    target = 2 * 6 + 4  # patch (row 2, column 4)
    with torch.no_grad():
        enc.patch_embed.proj.weight.zero_()  # tokens are the position embeddings alone
        first = enc.blocks[0]
        for layer in (first.attn.proj, first.mlp.fc2):  # the first block becomes the identity
            layer.weight.zero_()
            layer.bias.zero_()
        last = enc.blocks[-1]
        d = enc.embed_dim
        normed = last.norm1(enc.pos_embed[0])  # (N, D): what the last block's qkv sees
        last.attn.qkv.weight.zero_()
        last.attn.qkv.bias.zero_()
        last.attn.qkv.bias[:d] = 50 * normed[target]  # every query is the target's key direction...
        last.attn.qkv.weight[d : 2 * d] = torch.eye(d)  # ...and keys are the tokens themselves
    maps = attention_maps(enc, torch.randn(3, 1, 30, 30))
    assert maps.shape == (3, 30, 30)
    block = maps[:, 10:15, 20:25]  # the pixels of patch (2, 4)
    assert torch.all(block > 0.9)
    assert torch.allclose(maps.amax(dim=(1, 2)), block.amin(dim=(1, 2)))
    assert torch.allclose(maps.sum(dim=(1, 2)), torch.full((3,), 25.0))  # weights sum to 1 per patch


def test_attention_map_is_last_block_mean_over_heads_and_queries():
    enc = tiny_vit(28, 4, depth=3, heads=2)
    images = torch.randn(5, 1, 28, 28)
    _, maps = enc.forward_with_attention(images)
    received = maps[-1].mean(dim=1).mean(dim=1).reshape(5, 7, 7)  # (B, gh, gw)
    expected = received.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    torch.testing.assert_close(attention_maps(enc, images, batch_size=2), expected)


@pytest.mark.parametrize("img,patch", [(30, 5), (28, 4), (64, 16), ((24, 32), 8)])
def test_maps_for_any_image_and_patch_size(img, patch):
    enc = tiny_vit(img, patch, in_chans=3, depth=1)
    h, w = (img, img) if isinstance(img, int) else img
    images = torch.randn(3, 3, h, w)
    attn = attention_maps(enc, images, batch_size=2)
    assert attn.shape == (3, h, w)
    assert torch.allclose(attn.sum(dim=(1, 2)), torch.full((3,), float(patch * patch)), atol=1e-4)
    pca = pca_maps(enc, images, batch_size=2)
    assert pca.shape == (3, 3, h, w)
    assert pca.min() >= 0 and pca.max() <= 1
    assert torch.allclose(pca.amin(dim=(0, 2, 3)), torch.zeros(3))  # min-max per component
    assert torch.allclose(pca.amax(dim=(0, 2, 3)), torch.ones(3))
    with pytest.raises(ValueError, match="expected images of shape"):
        attention_maps(enc, torch.randn(1, 3, h + patch, w))


def test_pca_first_component_separates_image_halves():
    enc = tiny_vit(32, 4, depth=2, dim=32, patch_init_std=1.0)
    images = torch.full((4, 1, 32, 32), -2.0)
    images[..., 16:] = 2.0
    images += 0.1 * torch.randn_like(images)
    first = pca_maps(enc, images)[:, 0]  # (B, H, W): the first component
    left, right = first[..., :16], first[..., 16:]
    assert left.max() < right.min() or left.min() > right.max()


def test_pca_does_not_depend_on_batch_size():
    enc = tiny_vit(16, 4, depth=1)
    images = torch.randn(5, 1, 16, 16)
    torch.testing.assert_close(pca_maps(enc, images, batch_size=1), pca_maps(enc, images, batch_size=5))


# --------------------------------------------------------------------------------------------------
# PNG grids
# --------------------------------------------------------------------------------------------------


def test_visualize_writes_a_readable_png_grid(run_dir, tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
        tmp_path / "a.png"
    )
    Image.fromarray(np.full((10, 10), 200, dtype=np.uint8), "L").save(tmp_path / "b.jpg")
    png = visualize(
        run_dir,
        [tmp_path / "a.png", tmp_path / "b.jpg"],
        tmp_path / "out",
        dataset="synthetic",
        indices=[0, 3],
    )
    assert png == tmp_path / "out" / "visualize.png"
    with Image.open(png) as img:
        assert img.mode == "RGB"
        assert img.size == grid_size(1, 4, 112)  # 16 px images upscaled 7x to reach MIN_CELL
        assert np.asarray(img).std() > 10


def test_visualize_errors_are_clear(run_dir, tmp_path):
    with pytest.raises(ValueError, match="no images"):
        visualize(run_dir, [], tmp_path)
    with pytest.raises(ValueError, match="dataset name together with the indices"):
        visualize(run_dir, [], tmp_path, indices=[0])
    with pytest.raises(ValueError, match="out of range"):
        visualize(run_dir, [], tmp_path, dataset="synthetic", indices=[10**6])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        visualize(run_dir, [tmp_path / "missing.png"], tmp_path)
    (tmp_path / "not_an_image.png").write_text("hello")
    with pytest.raises(ValueError, match="cannot read as an image"):
        visualize(run_dir, [tmp_path / "not_an_image.png"], tmp_path)
