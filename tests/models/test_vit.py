"""The ViT encoder: published sizes, shapes, attention, token selection, initialisation."""

import math

import pytest
import torch
import torch.nn.functional as F

from openjepa.masks.gather import gather_tokens
from openjepa.models.pos_embed import sincos_2d
from openjepa.models.vit import VIT_SIZES, Attention, build_vit, vit_tiny

# Parameter counts of the published sizes at 224 px, patch 16, 3 channels (SPEC.md table, ≈).
EXPECTED_PARAMS = {
    "vit_tiny": 5.5e6,
    "vit_small": 22e6,
    "vit_base": 86e6,
    "vit_large": 304e6,
    "vit_huge": 632e6,
    "vit_giant": 1.0e9,
}


@pytest.mark.parametrize("name", sorted(VIT_SIZES))
def test_every_size_has_published_shape_and_parameter_count(name):
    with torch.device("meta"):
        enc = build_vit(name, img_size=224, patch_size=16, in_chans=3)
        out = enc(torch.empty(2, 3, 224, 224))
    size = VIT_SIZES[name]
    assert out.shape == (2, 196, size.embed_dim)
    assert len(enc.blocks) == size.depth and enc.blocks[0].attn.num_heads == size.num_heads
    n_params = sum(p.numel() for p in enc.parameters())
    assert n_params == pytest.approx(EXPECTED_PARAMS[name], rel=0.03)


@pytest.mark.parametrize("img,patch,chans", [(28, 4, 1), (28, 2, 1), (32, 4, 3), (48, 16, 3)])
def test_small_images_any_patch_and_channels(img, patch, chans):
    enc = build_vit("vit_tiny", img_size=img, patch_size=patch, in_chans=chans)
    x = torch.randn(3, chans, img, img)
    assert enc(x).shape == (3, (img // patch) ** 2, 192)
    assert enc.forward_features(x).shape == (3, (img // patch) ** 2, 192)


def test_non_square_images():
    enc = build_vit("vit_tiny", img_size=(32, 48), patch_size=8, in_chans=3)
    assert enc.grid_size == (4, 6)
    assert enc(torch.randn(2, 3, 32, 48)).shape == (2, 24, 192)


def test_bad_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match="not divisible by patch size"):
        vit_tiny(img_size=30, patch_size=4)
    enc = vit_tiny(img_size=28, patch_size=4, in_chans=1)
    with pytest.raises(ValueError, match="expected images of shape"):
        enc(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="unknown model"):
        build_vit("vit_colossal")


def test_position_embedding_is_fixed_buffer_in_state_dict():
    enc = vit_tiny(img_size=28, patch_size=4, in_chans=1)
    assert "pos_embed" in enc.state_dict()
    assert all(name != "pos_embed" for name, _ in enc.named_parameters())
    torch.testing.assert_close(enc.pos_embed[0], sincos_2d(192, 7, 7))


def test_patch_embed_equals_strided_conv():
    enc = vit_tiny(img_size=28, patch_size=4, in_chans=3)
    x = torch.randn(2, 3, 28, 28)
    conv = enc.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)
    torch.testing.assert_close(enc.patch_embed(x), conv, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_mask", [False, True])
def test_sdpa_and_explicit_attention_agree(with_mask):
    torch.manual_seed(0)
    attn = Attention(64, 4)
    x = torch.randn(3, 10, 64)
    mask = torch.rand(10, 10) > 0.3 if with_mask else None
    if mask is not None:
        mask.fill_diagonal_(True)  # every query sees at least itself
    fused = attn(x, attn_mask=mask)
    explicit, amap = attn(x, attn_mask=mask, return_attention=True)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
    assert amap.shape == (3, 4, 10, 10)
    torch.testing.assert_close(amap.sum(-1), torch.ones(3, 4, 10))
    if mask is not None:
        assert (amap[:, :, ~mask] == 0).all()


def test_attention_against_hand_written_formula():
    torch.manual_seed(1)
    attn = Attention(8, 2)
    x = torch.randn(1, 5, 8)
    q, k, v = attn.qkv(x).split(8, dim=-1)
    heads = [
        F.softmax(q[..., h * 4 : (h + 1) * 4] @ k[..., h * 4 : (h + 1) * 4].transpose(-1, -2) / 2.0, -1)
        @ v[..., h * 4 : (h + 1) * 4]
        for h in range(2)
    ]
    expected = attn.proj(torch.cat(heads, -1))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_forward_with_attention_matches_forward():
    enc = vit_tiny(img_size=28, patch_size=4, in_chans=1)
    x = torch.randn(2, 1, 28, 28)
    tokens, maps = enc.forward_with_attention(x)
    torch.testing.assert_close(tokens, enc(x), rtol=1e-4, atol=1e-4)
    assert len(maps) == 12 and maps[-1].shape == (2, 3, 49, 49)


def test_indices_encode_only_those_tokens():
    torch.manual_seed(0)
    enc = vit_tiny(img_size=28, patch_size=4, in_chans=1)
    x = torch.randn(2, 1, 28, 28)
    all_idx = torch.arange(49).expand(2, 49)
    torch.testing.assert_close(enc(x, all_idx), enc(x), rtol=1e-5, atol=1e-5)
    idx = torch.stack([torch.randperm(49)[:11] for _ in range(2)])
    # reference: embed everything, gather, then run the blocks
    ref = gather_tokens(enc.embed(x), idx)
    for blk in enc.blocks:
        ref = blk(ref)
    torch.testing.assert_close(enc(x, idx), enc.norm(ref), rtol=1e-5, atol=1e-5)
    # a token's output depends only on the selected tokens: permuting them permutes the output
    perm = torch.tensor([3, 0, 1, 2, 4, 5, 6, 7, 8, 9, 10])
    torch.testing.assert_close(enc(x, idx[:, perm]), enc(x, idx)[:, perm], rtol=1e-5, atol=1e-5)


def test_intermediate_layers():
    enc = vit_tiny(img_size=28, patch_size=4, in_chans=1)
    x = torch.randn(2, 1, 28, 28)
    outs = enc.get_intermediate_layers(x, n=4)
    assert len(outs) == 4 and all(o.shape == (2, 49, 192) for o in outs)
    torch.testing.assert_close(outs[-1], enc(x))
    raw = enc.get_intermediate_layers(x, n=2, norm=False)
    torch.testing.assert_close(enc.norm(raw[0]), outs[-2])
    with pytest.raises(ValueError):
        enc.get_intermediate_layers(x, n=13)


def test_reference_init_is_what_the_published_runs_trained_from():
    # every Linear weight N(0, 0.02) (bounds ±2 absolute: untruncated), zero biases, no depth rescale
    torch.manual_seed(0)
    enc = build_vit("vit_small", img_size=32, patch_size=4, in_chans=3, depth=8)
    w = enc.blocks[0].mlp.fc1.weight  # 589,824 draws
    assert w.std().item() == pytest.approx(0.02, rel=0.01)
    assert w.abs().max().item() > 0.08  # 4σ values exist: not truncated at ±2σ = 0.04
    kurtosis = (w.double() / w.double().std()).pow(4).mean().item()
    assert kurtosis == pytest.approx(3.0, abs=0.05)  # a normal; a ±2σ-truncated one has 2.36
    assert (enc.blocks[0].attn.qkv.bias == 0).all()
    assert (enc.norm.weight == 1).all() and (enc.norm.bias == 0).all()
    for proj in ("attn.proj.weight", "mlp.fc2.weight"):
        last = enc.blocks[7].get_parameter(proj).std().item()
        assert last == pytest.approx(0.02, rel=0.02)  # block 8 is not divided by sqrt(16)
    assert enc.patch_embed.proj.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_rescaled_init_truncates_and_divides_by_depth():
    torch.manual_seed(0)
    enc = build_vit("vit_small", img_size=32, patch_size=4, in_chans=3, init="rescaled")
    w = enc.blocks[0].mlp.fc1.weight
    assert w.std().item() == pytest.approx(0.02 * 0.88, rel=0.05)  # ±2σ truncation shrinks std to 0.88σ
    assert w.abs().max().item() <= 0.04 + 1e-6
    # residual output projections of block i are divided by sqrt(2 i)
    ratio = enc.blocks[0].attn.proj.weight.std() / enc.blocks[3].attn.proj.weight.std()
    assert ratio.item() == pytest.approx(math.sqrt(4), rel=0.1)
    with pytest.raises(ValueError, match="init scheme"):
        build_vit("vit_tiny", img_size=8, patch_size=4, in_chans=1, init="xavier")


def test_grad_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    enc = vit_tiny(img_size=16, patch_size=4, in_chans=1)
    x = torch.randn(2, 1, 16, 16)
    enc(x).square().mean().backward()
    ref = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    enc.grad_checkpointing = True
    enc(x).square().mean().backward()
    for g, p in zip(ref, enc.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


def test_patch_init_std_option():
    torch.manual_seed(0)
    default = vit_tiny(img_size=28, patch_size=4, in_chans=1, init="rescaled")
    scaled = vit_tiny(img_size=28, patch_size=4, in_chans=1, patch_init_std=0.25, init="rescaled")
    assert default.patch_embed.proj.weight.std().item() == pytest.approx(0.02 * 0.88, rel=0.1)
    assert scaled.patch_embed.proj.weight.std().item() == pytest.approx(0.25 * 0.88, rel=0.1)
    reference = vit_tiny(img_size=28, patch_size=4, in_chans=1, patch_init_std=0.25)
    assert reference.patch_embed.proj.weight.std().item() == pytest.approx(0.25, rel=0.1)
    torch.testing.assert_close(
        scaled.blocks[0].mlp.fc1.weight.std(), default.blocks[0].mlp.fc1.weight.std(), rtol=0.05, atol=0
    )


def test_any_size_forward_uses_the_positions_of_its_own_grid():
    from openjepa.models.pos_embed import sincos_2d

    torch.manual_seed(0)
    enc = vit_tiny(img_size=28, patch_size=4, in_chans=1)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(enc.forward_any_size(x), enc(x))  # the model's own grid: the same
    small = torch.randn(2, 1, 12, 16)
    out = enc.forward_any_size(small)
    assert out.shape == (2, 12, 192)
    tokens = enc.patch_embed(small, any_size=True) + sincos_2d(192, 3, 4)[None]  # by hand
    for blk in enc.blocks:
        tokens = blk(tokens)
    torch.testing.assert_close(out, enc.norm(tokens))
    with pytest.raises(ValueError, match="expected images of shape"):
        enc(small)  # the plain forward keeps its size check
    with pytest.raises(ValueError, match="expected images of shape"):
        enc.forward_any_size(torch.randn(2, 1, 13, 16))
