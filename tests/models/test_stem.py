"""model.stem: the linear patch embedding of the published ViTs, or a per-patch MLP."""

import pytest
import torch

from openjepa.config import ConfigError, load_config
from openjepa.models.build import build_encoder
from openjepa.models.vit import PatchEmbed, VisionTransformer


def tiny(stem: str, **kw) -> VisionTransformer:
    torch.manual_seed(0)
    kw = {"img_size": 16, "patch_size": 4, "in_chans": 1, "embed_dim": 32, "depth": 2, "num_heads": 2} | kw
    return VisionTransformer(stem=stem, **kw)


def test_mlp_stem_adds_exactly_its_layers_and_keeps_the_linear_stem_as_it_was():
    linear, mlp = tiny("linear"), tiny("mlp")
    extra = set(mlp.state_dict()) - set(linear.state_dict())
    assert extra == {f"patch_embed.mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    assert set(linear.state_dict()) <= set(mlp.state_dict())
    # the linear stem draws the same random numbers as before the option existed: the same weights as a
    # model built without the argument
    torch.manual_seed(0)
    plain = VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2)
    pairs = zip(plain.state_dict().values(), linear.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_each_token_of_the_mlp_stem_reads_its_own_patch_only():
    embed = PatchEmbed(16, 4, 1, 32, stem="mlp")
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    y = x.clone()
    y[0, 0, 4:8, 8:12] += 1.0  # patch (row 1, column 2) of the 4 x 4 grid: token 6
    with torch.no_grad():
        changed = (embed(x) - embed(y)).abs().amax(dim=-1)[0]  # (16,)
    assert changed[6] > 1e-3
    assert torch.equal(changed[torch.arange(16) != 6], torch.zeros(15))


def test_mlp_stem_on_selected_patches_equals_the_full_grid_gathered():
    enc = tiny("mlp").eval()
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    idx = torch.tensor([[0, 5, 9], [15, 3, 2], [7, 7, 1]])
    with torch.no_grad():
        full = enc.embed(x)
        part = enc.embed(x, idx)
    torch.testing.assert_close(part, torch.stack([full[b, idx[b]] for b in range(3)]), rtol=0, atol=1e-6)


def test_patch_init_std_gives_mlp_tokens_of_about_the_linear_stems_scale():
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    scales = {}
    for stem in ("linear", "mlp"):
        enc = tiny(stem, img_size=28, embed_dim=128, num_heads=4, patch_init_std=0.25)
        with torch.no_grad():
            scales[stem] = enc.patch_embed(x).std().item()
    assert 0.9 < scales["linear"] < 1.1  # 0.25 * sqrt(16 pixels)
    assert 0.5 * scales["linear"] < scales["mlp"] < 1.5 * scales["linear"]


def test_mlp_stem_trains_and_unknown_stems_are_refused():
    cfg = load_config(None, ["model.stem=mlp", "model.depth=1", "model.embed_dim=32", "model.num_heads=2"])
    enc = build_encoder(cfg.model, image_size=16, in_chans=1)
    enc(torch.randn(2, 1, 16, 16)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.patch_embed.mlp.parameters())
    with pytest.raises(ConfigError, match="model.stem"):
        load_config(None, ["model.stem=conv"])
    with pytest.raises(ValueError, match="unknown stem 'conv'"):
        PatchEmbed(16, 4, 1, 32, stem="conv")
