"""C-JEPA: each reading's terms, switches, gradients, training runs, and DDP against one process."""

import json
from itertools import combinations
from pathlib import Path

import pytest
import torch
from tiny_run import TINY, torchrun2
from torch import nn

from openjepa.config import ConfigError, load_config
from openjepa.losses.vicreg import VICRegWeights, covariance_loss, invariance_loss, variance_loss
from openjepa.masks.multiblock import MultiBlockMaskSampler, step_generator
from openjepa.methods.cjepa import CJEPA, build_projector, default_projector
from openjepa.models.predictor import Predictor
from openjepa.models.vit import VisionTransformer
from openjepa.train.loop import Trainer


def tiny_cjepa(reading="A", seed=0, **kwargs):
    torch.manual_seed(seed)
    enc = VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2)
    pred = Predictor(enc.grid_size, 32, predictor_dim=16, depth=1, num_heads=2)
    return CJEPA(enc, pred, reading=reading, **kwargs)


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, 16, 16, generator=g)
    masks = MultiBlockMaskSampler((4, 4), min_keep=2)(n, step_generator(seed, 0))
    views = (images + 0.1 * torch.randn(images.shape, generator=g), images * 0.8)
    return images, masks, views


def test_projector_shapes_and_defaults():
    assert default_projector("A", 32) == (128, 128)
    assert default_projector("B", 32) == () and default_projector("C", 32) == ()
    assert isinstance(build_projector(32, ()), nn.Identity)
    proj = build_projector(32, (64, 16))
    assert proj(torch.randn(5, 32)).shape == (5, 16)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in proj.modules())  # independent of the batch split


def test_reading_a_equals_the_pairwise_definition():
    model = tiny_cjepa("A")
    images, masks, _ = batch()
    out = model(images, masks)
    p = model.projector(out.prediction.mean(dim=2))  # (B, M, E)
    pairs = list(combinations(range(p.shape[1]), 2))
    inv = sum(invariance_loss(p[:, i], p[:, j]) for i, j in pairs) / len(pairs)
    var = sum((variance_loss(p[:, i]) + variance_loss(p[:, j])) / 2 for i, j in pairs) / len(pairs)
    cov = sum(covariance_loss(p[:, i]) + covariance_loss(p[:, j]) for i, j in pairs) / len(pairs)
    torch.testing.assert_close(out.terms["inv"], inv.detach())
    torch.testing.assert_close(out.terms["var"], var.detach())
    torch.testing.assert_close(out.terms["cov"], cov.detach())
    w = VICRegWeights()
    expected = out.terms["jepa"] + w.vicreg * (w.sim * inv + w.std * var + w.cov * cov)
    torch.testing.assert_close(out.loss, expected)


def test_reading_b_uses_pooled_context_and_jepa_as_invariance():
    model = tiny_cjepa("B")
    images, masks, _ = batch()
    out = model(images, masks)
    z = model.encoder(images, masks.context).mean(dim=1)
    torch.testing.assert_close(out.terms["var"], variance_loss(z).detach())
    torch.testing.assert_close(out.terms["cov"], covariance_loss(z).detach())
    torch.testing.assert_close(out.terms["inv"], out.terms["jepa"])
    w = VICRegWeights()
    expected = out.terms["jepa"] + w.vicreg * (w.std * out.terms["var"] + w.cov * out.terms["cov"])
    torch.testing.assert_close(out.loss.detach(), expected)


def test_reading_c_uses_the_two_views():
    model = tiny_cjepa("C")
    images, masks, views = batch()
    out = model(images, masks, views)
    za = model.encoder(views[0], masks.context).mean(dim=1)
    zb = model.encoder(views[1], masks.context).mean(dim=1)
    torch.testing.assert_close(out.terms["inv"], invariance_loss(za, zb).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        out.terms["var"], ((variance_loss(za) + variance_loss(zb)) / 2).detach(), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="views"):
        model(images, masks)


@pytest.mark.parametrize("reading", ["A", "B", "C"])
def test_vicreg_gradient_reaches_the_encoder(reading):
    model = tiny_cjepa(reading)
    images, masks, views = batch()
    out = model(images, masks, views) if reading == "C" else model(images, masks)
    reg = out.loss - out.terms["jepa"]  # the VICReg part only
    assert reg.item() > 0
    reg.backward()
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum().item() for g in grads) > 0
    assert all(p.grad is None for p in model.target_encoder.parameters())


@pytest.mark.parametrize(("var_cov", "inv"), [(True, False), (False, True)])
def test_switched_off_terms_are_logged_but_not_in_the_loss(var_cov, inv):
    model = tiny_cjepa("A", var_cov=var_cov, inv=inv)
    images, masks, _ = batch()
    out = model(images, masks)
    w, t = VICRegWeights(), out.terms
    reg = (w.sim * t["inv"] if inv else 0) + ((w.std * t["var"] + w.cov * t["cov"]) if var_cov else 0)
    torch.testing.assert_close(out.loss.detach(), t["jepa"] + w.vicreg * reg)
    assert t["var"] > 0 and t["inv"] > 0


def test_invalid_switch_combinations_are_explained():
    with pytest.raises(ValueError, match="reading B"):
        tiny_cjepa("B", inv=False)
    with pytest.raises(ValueError, match="I-JEPA"):
        tiny_cjepa("A", var_cov=False, inv=False)
    with pytest.raises(ConfigError, match="cjepa.reading"):
        load_config(None, ["cjepa.reading=D"])


def run_dir(tmp_path, name, *extra):
    return [*TINY, f"run.out_dir={tmp_path / name}", "method=cjepa", *extra]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("reading", ["A", "B", "C"])
def test_each_reading_trains_and_logs_its_terms(tmp_path, reading):
    cfg = load_config(None, run_dir(tmp_path, reading, f"cjepa.reading={reading}", "run.max_steps=3"))
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    summary = trainer.fit()
    assert summary["step"] == 3
    rows = metrics(tmp_path / reading)
    assert len(rows) == 3
    for row in rows:
        for key in ("loss_jepa", "vicreg_inv", "vicreg_var", "vicreg_cov", "target_std"):
            assert key in row and row[key] == row[key]  # present and not NaN
        assert row["loss"] > row["loss_jepa"]
    after = trainer.model.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    if reading == "A":
        names = {n for g in trainer.optimizer.param_groups for n in map(id, g["params"])}
        assert all(id(p) in names for p in trainer.model.projector.parameters())  # projector is trained
    ckpt = torch.load(tmp_path / reading / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["method"] == "cjepa"


def test_without_ema_the_target_is_a_copy_of_the_encoder(tmp_path):
    cfg = load_config(None, run_dir(tmp_path, "noema", "optim.ema=[0.0, 0.0]", "run.max_steps=2"))
    trainer = Trainer(cfg)
    trainer.fit()
    for (name, t), e in zip(
        trainer.model.target_encoder.state_dict().items(),
        trainer.model.encoder.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(t, e), name


@pytest.mark.parametrize("reading", ["A", "C"])
def test_resume_of_a_cjepa_run_matches_an_uninterrupted_one(tmp_path, reading):
    """Projector and optimizer state are saved; reading C's views are a function of the seed and step."""
    r = f"cjepa.reading={reading}"
    full = Trainer(load_config(None, run_dir(tmp_path, "full", r, "run.max_steps=4")))
    full.fit()
    Trainer(load_config(None, run_dir(tmp_path, "split", r, "run.max_steps=2"))).fit()
    resumed = Trainer(load_config(None, run_dir(tmp_path, "split", r, "run.max_steps=4")))
    resumed.fit()
    for (name, a), b in zip(
        full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_torchrun_cjepa_matches_one_process(tmp_path):
    """Reading A gathers the pooled predictions of both processes for variance and covariance; two
    processes must follow the single-process run on the same global batch."""
    overrides = run_dir(tmp_path, "ddp", "cjepa.reading=A", "run.max_steps=3")
    torchrun2("dist_worker.py", str(tmp_path), *overrides)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    single = Trainer(load_config(None, run_dir(tmp_path, "single", "cjepa.reading=A", "run.max_steps=3")))
    single.fit()
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(r0[key], value, rtol=1e-4, atol=1e-5, msg=key)
    ddp = metrics(tmp_path / "ddp")
    one = metrics(tmp_path / "single")
    for key in ("loss", "vicreg_var", "vicreg_cov"):
        assert [r[key] for r in ddp] == pytest.approx([r[key] for r in one], rel=1e-4), key


def test_resuming_a_run_of_another_method_is_refused(tmp_path):
    Trainer(load_config(None, [*TINY, f"run.out_dir={tmp_path / 'r'}", "run.max_steps=1"])).fit()  # I-JEPA
    cjepa = Trainer(load_config(None, run_dir(tmp_path, "r", "run.max_steps=2")))
    with pytest.raises(ValueError, match="trained with method ijepa but the config asks for cjepa"):
        cjepa.fit()
    Trainer(load_config(None, run_dir(tmp_path, "c", "cjepa.reading=B", "run.max_steps=1"))).fit()
    with pytest.raises(ValueError, match="reading=B.*reading=A"):
        Trainer(load_config(None, run_dir(tmp_path, "c", "cjepa.reading=A", "run.max_steps=2"))).fit()
