"""C-JEPA: each reading's terms, switches, gradients, projector, batch, description and resume key.

Training runs through the trainer (each reading, resume, torchrun): tests/e2e/test_cjepa_runs.py.
"""

from itertools import combinations

import pytest
import torch
from torch import nn

from openjepa.config import ConfigError, load_config
from openjepa.data.augment import PretrainAugment
from openjepa.data.transforms import crop_and_resize, normalize, to_float
from openjepa.losses.vicreg import VICRegWeights, covariance_loss, invariance_loss, variance_loss
from openjepa.masks.multiblock import MultiBlockMaskSampler
from openjepa.methods import StepContext, build_method
from openjepa.methods.cjepa import CJEPA, CJEPAConfig, build_projector, default_projector
from openjepa.models.predictor import Predictor
from openjepa.models.vit import VisionTransformer
from openjepa.rng import Stream, step_generator
from tests.helpers import TINY


def tiny_cjepa(reading="A", seed=0, **kwargs):
    torch.manual_seed(seed)
    enc = VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2)
    pred = Predictor(enc.grid_size, 32, predictor_dim=16, depth=1, num_heads=2)
    return CJEPA(enc, pred, MultiBlockMaskSampler(enc.grid_size, min_keep=2), reading=reading, **kwargs)


def batch(n=8, seed=0):
    """The forward's batch: images, masks of a 4x4 grid, and two views of the images."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, 16, 16, generator=g)
    masks = MultiBlockMaskSampler((4, 4), min_keep=2)(n, step_generator(seed, 0))
    return {
        "images": images,
        "context": masks.context,
        "targets": masks.targets,
        "view1": images + 0.1 * torch.randn(images.shape, generator=g),
        "view2": images * 0.8,
    }


def without_views(b):
    return {k: v for k, v in b.items() if k not in ("view1", "view2")}


def test_projector_shapes_and_defaults():
    assert default_projector("A", 32) == (128, 128)
    assert default_projector("B", 32) == () and default_projector("C", 32) == ()
    assert isinstance(build_projector(32, ()), nn.Identity)
    proj = build_projector(32, (64, 16))
    assert proj(torch.randn(5, 32)).shape == (5, 16)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in proj.modules())  # independent of the batch split


def test_projector_layout_and_the_model_s_projector():
    proj = build_projector(32, (64, 16))
    linears = [m for m in proj if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 64), (64, 16)]
    assert linears[0].bias is not None and linears[-1].bias is None  # VICReg is blind to a shared shift
    assert any(isinstance(m, nn.LayerNorm) for m in proj)
    assert isinstance(tiny_cjepa("A").projector, nn.Sequential)
    assert isinstance(tiny_cjepa("C").projector, nn.Identity)
    assert tiny_cjepa("B", projector=(8,)).projector(torch.randn(3, 32)).shape == (3, 8)


def test_reading_a_equals_the_pairwise_definition():
    model = tiny_cjepa("A")
    b = without_views(batch())
    out = model(b)
    prediction, _, _ = model.predict(b["images"], b["context"], b["targets"])
    p = model.projector(prediction.mean(dim=2))  # (B, M, E)
    pairs = list(combinations(range(p.shape[1]), 2))
    inv = sum(invariance_loss(p[:, i], p[:, j]) for i, j in pairs) / len(pairs)
    var = sum((variance_loss(p[:, i]) + variance_loss(p[:, j])) / 2 for i, j in pairs) / len(pairs)
    cov = sum(covariance_loss(p[:, i]) + covariance_loss(p[:, j]) for i, j in pairs) / len(pairs)
    torch.testing.assert_close(out.metrics["vicreg_inv"], inv.detach())
    torch.testing.assert_close(out.metrics["vicreg_var"], var.detach())
    torch.testing.assert_close(out.metrics["vicreg_cov"], cov.detach())
    w = VICRegWeights()
    expected = out.metrics["loss_jepa"] + w.vicreg * (w.sim * inv + w.std * var + w.cov * cov)
    torch.testing.assert_close(out.loss, expected)


def test_reading_b_uses_pooled_context_and_jepa_as_invariance():
    model = tiny_cjepa("B")
    b = without_views(batch())
    out = model(b)
    z = model.encoder(b["images"], b["context"]).mean(dim=1)
    torch.testing.assert_close(out.metrics["vicreg_var"], variance_loss(z).detach())
    torch.testing.assert_close(out.metrics["vicreg_cov"], covariance_loss(z).detach())
    torch.testing.assert_close(out.metrics["vicreg_inv"], out.metrics["loss_jepa"])
    w = VICRegWeights()
    t = out.metrics
    expected = t["loss_jepa"] + w.vicreg * (w.std * t["vicreg_var"] + w.cov * t["vicreg_cov"])
    torch.testing.assert_close(out.loss.detach(), expected)


def test_reading_c_uses_the_two_views():
    model = tiny_cjepa("C")
    b = batch()
    out = model(b)
    za = model.encoder(b["view1"], b["context"]).mean(dim=1)
    zb = model.encoder(b["view2"], b["context"]).mean(dim=1)
    torch.testing.assert_close(
        out.metrics["vicreg_inv"], invariance_loss(za, zb).detach(), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        out.metrics["vicreg_var"],
        ((variance_loss(za) + variance_loss(zb)) / 2).detach(),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="views"):
        model(without_views(b))


def test_metrics_are_the_jepa_ones_plus_the_vicreg_terms():
    out = tiny_cjepa("A")(without_views(batch()))
    assert set(out.metrics) == {"target_std", "loss_jepa", "vicreg_inv", "vicreg_var", "vicreg_cov"}
    assert all(not v.requires_grad and v.dim() == 0 for v in out.metrics.values())


@pytest.mark.parametrize("reading", ["A", "B", "C"])
def test_vicreg_gradient_reaches_the_encoder(reading):
    model = tiny_cjepa(reading)
    b = batch() if reading == "C" else without_views(batch())
    out = model(b)
    reg = out.loss - out.metrics["loss_jepa"]  # the VICReg part only
    assert reg.item() > 0
    reg.backward()
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum().item() for g in grads) > 0
    assert all(p.grad is None for p in model.target_encoder.parameters())


@pytest.mark.parametrize(("var_cov", "inv"), [(True, False), (False, True)])
def test_switched_off_terms_are_logged_but_not_in_the_loss(var_cov, inv):
    model = tiny_cjepa("A", var_cov=var_cov, inv=inv)
    out = model(without_views(batch()))
    w, t = VICRegWeights(), out.metrics
    reg = (w.sim * t["vicreg_inv"] if inv else 0) + (
        (w.std * t["vicreg_var"] + w.cov * t["vicreg_cov"]) if var_cov else 0
    )
    torch.testing.assert_close(out.loss.detach(), t["loss_jepa"] + w.vicreg * reg)
    assert t["vicreg_var"] > 0 and t["vicreg_inv"] > 0


def test_invalid_switch_combinations_are_explained():
    with pytest.raises(ValueError, match="reading B"):
        tiny_cjepa("B", inv=False)
    with pytest.raises(ValueError, match="I-JEPA"):
        tiny_cjepa("A", var_cov=False, inv=False)
    with pytest.raises(ValueError, match="unknown C-JEPA reading 'D'"):
        tiny_cjepa("D")
    with pytest.raises(ConfigError, match="method.reading"):
        load_config(None, ["method=cjepa", "method.reading=D"])


def test_reading_a_needs_two_target_blocks():
    model = tiny_cjepa("A")
    b = without_views(batch())
    b["targets"] = b["targets"][:, :1]
    with pytest.raises(ValueError, match="at least two target blocks"):
        model(b)


def test_weights_and_switches_come_from_the_config():
    cfg = load_config(
        None,
        [
            *TINY,
            "method=cjepa",
            "method.reading=A",
            "method.inv=false",
            "method.beta_vicreg=0.5",
            "method.beta_cov=2.0",
            "method.projector=[24]",
        ],
    )
    model = build_method(cfg, in_chans=3)
    assert isinstance(model, CJEPA) and model.reading == "A" and not model.inv and model.var_cov
    assert model.weights.vicreg == 0.5 and model.weights.cov == 2.0
    assert model.weights.sim == VICRegWeights().sim and model.weights.std == VICRegWeights().std
    assert model.projector(torch.randn(2, 32)).shape == (2, 24)


def test_describe_and_resume_key():
    cfg = CJEPAConfig(reading="B", var_cov=True, inv=True, beta_vicreg=0.001)
    assert CJEPA.describe(cfg) == "cjepa (reading B, var/cov on, inv on, β_vicreg 0.001)"
    assert CJEPA.resume_key(cfg) == "cjepa (reading=B, var_cov=True, inv=True)"
    # a weight may change on resumption; the reading and the switches may not
    assert CJEPA.resume_key(CJEPAConfig(reading="B", beta_vicreg=0.5)) == CJEPA.resume_key(cfg)
    assert CJEPA.resume_key(CJEPAConfig(reading="A")) != CJEPA.resume_key(CJEPAConfig(reading="C"))
    assert CJEPA.resume_key(CJEPAConfig(reading="C", var_cov=False)) != CJEPA.resume_key(CJEPAConfig())
    assert CJEPAConfig().reading == "C"  # the default reading


def _context(step, rank, world, global_batch=8):
    return StepContext(
        step=step,
        seed=0,
        rank=rank,
        rows=slice(rank, global_batch, world),
        global_batch=global_batch,
        device=torch.device("cpu"),
        augment=PretrainAugment(16, (0.5,), (0.25,), crop_scale=(0.3, 1.0), seed=0),
    )


def test_reading_c_batch_adds_views_of_the_crops():
    """Crops and masks are drawn per global batch and sliced by rows (as one process would draw them); the
    views are drawn per process, from (seed, step, rank)."""
    model = tiny_cjepa("C")
    images = torch.randint(
        0, 256, (8, 1, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    single = model.prepare_batch(images, _context(4, 0, 1))
    assert set(single) == {"images", "context", "targets", "context_len", "view1", "view2"}
    assert single["view1"].shape == single["images"].shape == (8, 1, 16, 16)
    assert not torch.equal(single["view1"], single["view2"])
    assert torch.isfinite(model(single).loss)
    for rank in (0, 1):
        rows = slice(rank, 8, 2)
        part = model.prepare_batch(images[rows], _context(4, rank, 2))
        for key in ("images", "targets"):
            assert torch.equal(part[key], single[key][rows]), key
        # each process's contexts are cut to its own shortest (tests/methods/test_mask_groups.py)
        assert part["context"].shape[1] >= single["context"].shape[1]
    again = model.prepare_batch(images, _context(4, 0, 1))
    assert all(torch.equal(again[k], single[k]) for k in single)
    keys = {"images", "context", "targets", "context_len"}
    assert set(tiny_cjepa("A").prepare_batch(images, _context(4, 0, 1))) == keys


def _uint8_images(n, side=20, seed=0):
    return torch.randint(
        0, 256, (n, 1, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_reading_c_views_with_crops_of_their_own():
    """``view_crop_scale`` gives each view its own crop of the image as loaded; the JEPA inputs stay those
    of shared views. With the whole image as the crop (scale 1) a view is the photometric augmenter applied
    to the resized image, and a view flip is either that image or its mirror, about half of each."""
    images = _uint8_images(64)
    shared = tiny_cjepa("C").prepare_batch(images, _context(4, 0, 1, 64))
    model = tiny_cjepa("C", view_crop_scale=(1.0, 1.0))
    own = model.prepare_batch(images, _context(4, 0, 1, 64))
    for key in ("images", "context", "targets"):
        assert torch.equal(own[key], shared[key]), key
    # the reference: the whole 20 x 20 image resized to 16, then VICReg's two augmenters in their order
    whole = crop_and_resize(to_float(images), torch.tensor([[0.0, 0.0, 20.0, 20.0]] * 64), 16)
    g = step_generator(0 ^ Stream.VIEWS, 4, 0)
    m, s = (0.5,), (0.25,)
    assert torch.allclose(own["view1"], normalize(model.views.first(whole, g), m, s), atol=1e-6)
    assert torch.allclose(own["view2"], normalize(model.views.second(whole, g), m, s), atol=1e-6)

    flipping = tiny_cjepa("C", view_crop_scale=(1.0, 1.0), view_flip=True)
    c1, c2 = flipping._view_crops(images, _context(4, 0, 1, 64))
    for view in (c1, c2):
        same = (view - whole).abs().flatten(1).amax(1) < 1e-6  # (B,)
        mirrored = (view - whole.flip(-1)).abs().flatten(1).amax(1) < 1e-6
        assert bool((same | mirrored).all())
        assert 16 <= int(mirrored.sum()) <= 48  # Binomial(64, 0.5): outside this, p < 1e-4
    assert not torch.equal(c1, c2)  # the two views flip independently

    cropping = tiny_cjepa("C", view_crop_scale=(0.3, 0.5))
    c1, c2 = cropping._view_crops(images, _context(4, 0, 1, 64))
    again = cropping._view_crops(images, _context(4, 0, 1, 64))
    assert torch.equal(c1, again[0]) and torch.equal(c2, again[1])  # a function of (seed, step, rank)
    assert not torch.equal(c1, c2) and c1.shape == (64, 1, 16, 16)
    assert not torch.equal(c1, cropping._view_crops(images, _context(5, 0, 1, 64))[0])


def test_view_crops_belong_to_reading_c():
    with pytest.raises(ValueError, match="reading C"):
        tiny_cjepa("A", view_crop_scale=(0.3, 1.0))
    with pytest.raises(ValueError, match="give view_crop_scale"):
        tiny_cjepa("C", view_flip=True)
    with pytest.raises(ConfigError, match="method.view_crop_scale"):
        load_config(None, [*TINY, "method=cjepa", "method.reading=B", "method.view_crop_scale=[0.3,1.0]"])
    with pytest.raises(ConfigError, match="method.view_flip=true"):
        load_config(None, [*TINY, "method=cjepa", "method.view_flip=true"])
    with pytest.raises(ConfigError, match="method.view_crop_scale"):
        load_config(None, [*TINY, "method=cjepa", "method.view_crop_scale=[0.5,0.3]"])
    cfg = load_config(
        None, [*TINY, "method=cjepa", "method.view_crop_scale=[0.3,1.0]", "method.view_flip=true"]
    )
    model = build_method(cfg, in_chans=3)
    assert isinstance(model, CJEPA) and model.view_crop_scale == (0.3, 1.0) and model.view_flip
