"""I-JEPA against an independent computation of the published algorithm: targets, predictions, loss,
gradients, and the AdamW + EMA step; a short training run; a bf16 step of a config-built model."""

import math

import pytest
import torch
import torch.nn.functional as F

from openjepa.config import OptimConfig, load_config
from openjepa.masks.multiblock import MultiBlockMaskSampler
from openjepa.methods import build_method
from openjepa.methods.ijepa import IJEPA
from openjepa.models.predictor import Predictor
from openjepa.models.vit import VisionTransformer
from openjepa.rng import step_generator
from openjepa.runtime.device import autocast
from openjepa.train.optim import build_optimizer, set_hyperparams
from openjepa.utils.schedules import Schedules


def tiny_ijepa(seed=0, loss="smooth_l1", ema=(0.996, 1.0)):
    torch.manual_seed(seed)
    enc = VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2)
    pred = Predictor(enc.grid_size, 32, predictor_dim=16, depth=1, num_heads=2)
    return IJEPA(enc, pred, MultiBlockMaskSampler(enc.grid_size, min_keep=2), loss=loss, ema=ema)


def mask_batch(images, seed=0):
    """The method's batch dict for ``images`` with masks of a 4x4 grid."""
    masks = MultiBlockMaskSampler(4, min_keep=2)(images.shape[0], torch.Generator().manual_seed(seed))
    return {"images": images, "context": masks.context, "targets": masks.targets}


def reference_loss(model, batch):
    """The published step written out by hand: layer-normed target features at the target blocks, the
    predictor's output from the context tokens, mean Huber (β = 1) distance."""
    x, ctx, tgt = batch["images"], batch["context"], batch["targets"]
    with torch.no_grad():
        h = model.target_encoder(x)
        h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
        target = torch.stack([h[b, tgt[b]] for b in range(x.shape[0])])  # (B, M, Kt, D)
    z = model.encoder(x, ctx)
    pred = model.predictor(z, ctx, tgt)
    diff = (pred - target).abs()
    return torch.where(diff < 1, 0.5 * diff**2, diff - 0.5).mean(), pred, target, z


def test_target_encoder_starts_as_copy_and_gets_no_gradient():
    model = tiny_ijepa()
    for a, b in zip(model.encoder.parameters(), model.target_encoder.parameters(), strict=True):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
        assert not b.requires_grad
    model(mask_batch(torch.randn(2, 1, 16, 16))).loss.backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())


# ---- loss ------------------------------------------------------------------------------------------


def test_forward_matches_hand_computation():
    model = tiny_ijepa()
    x = torch.randn(3, 1, 16, 16)
    batch = mask_batch(x)
    masks_context, masks_targets = batch["context"], batch["targets"]
    out = model(batch)
    prediction, target, z = model.predict(x, masks_context, masks_targets)
    h = model.target_encoder(x)
    h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
    expected_target = torch.stack([h[b, masks_targets[b]] for b in range(3)])  # (B, M, Kt, D)
    torch.testing.assert_close(target, expected_target, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.targets(x, masks_targets), expected_target, rtol=1e-4, atol=1e-4)
    expected_z = model.encoder(x, masks_context)
    torch.testing.assert_close(z, expected_z)
    expected_pred = model.predictor(expected_z, masks_context, masks_targets)
    torch.testing.assert_close(prediction, expected_pred)
    diff = (expected_pred - expected_target).abs()
    huber = torch.where(diff < 1, 0.5 * diff**2, diff - 0.5).mean()
    torch.testing.assert_close(out.loss, huber, rtol=1e-4, atol=1e-6)
    assert set(out.metrics) == {"target_std"}
    torch.testing.assert_close(out.metrics["target_std"], target.reshape(-1, 32).std(dim=0).mean())


def test_l2_loss_is_the_mean_squared_error():
    model = tiny_ijepa(loss="l2")
    x = torch.randn(3, 1, 16, 16)
    batch = mask_batch(x)
    prediction, target, _ = model.predict(x, batch["context"], batch["targets"])
    torch.testing.assert_close(model(batch).loss, ((prediction - target) ** 2).mean())


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown loss"):
        tiny_ijepa(loss="cosine")


def test_gradients_match_the_hand_computation():
    model = tiny_ijepa()
    batch = mask_batch(torch.randn(4, 1, 16, 16), seed=1)
    model(batch).loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    reference_loss(model, batch)[0].backward()
    assert got.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_adamw_and_ema_step_match_the_published_update():
    """One step: AdamW (decoupled weight decay, none on biases and 1-D parameters) on encoder and predictor,
    then θ̄ ← m·θ̄ + (1 − m)·θ on the target encoder, each written out by hand."""
    lr, wd, m = 1e-2, 0.05, 0.9
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    model = tiny_ijepa(ema=(m, m))
    opt = build_optimizer(model, OptimConfig(lr=lr, weight_decay=wd, betas=(beta1, beta2), eps=eps))
    batch = mask_batch(torch.randn(4, 1, 16, 16), seed=2)
    online = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    target_before = [p.detach().clone() for p in model.target_encoder.parameters()]

    model(batch).loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt.step()
    opt.zero_grad(set_to_none=True)
    assert model.after_optimizer_step(0, 10) == {"ema": pytest.approx(m)}

    expected = {}
    for name, theta in online.items():
        g = grads[name]
        decay = 0.0 if name.endswith("bias") or theta.ndim <= 1 else wd
        m1 = (1 - beta1) * g
        v1 = (1 - beta2) * g * g
        m_hat, v_hat = m1 / (1 - beta1), v1 / (1 - beta2)
        expected[name] = theta * (1 - lr * decay) - lr * m_hat / (v_hat.sqrt() + eps)
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.detach(), expected[name], rtol=1e-5, atol=1e-7, msg=name)
    enc_names = [n for n, _ in model.encoder.named_parameters()]
    for name, t, b in zip(enc_names, model.target_encoder.parameters(), target_before, strict=True):
        torch.testing.assert_close(t, m * b + (1 - m) * expected["encoder." + name], msg=name)


# ---- training ---------------------------------------------------------------------------------------


def synthetic_images(n=64, seed=0):
    """Images made of a few class prototypes plus noise: structure a JEPA can predict."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(4, 1, 4, 4, generator=g)
    labels = torch.randint(0, 4, (n,), generator=g)
    imgs = F.interpolate(protos[labels], size=16, mode="bilinear", align_corners=False)
    return imgs + 0.1 * torch.randn(n, 1, 16, 16, generator=g)


def test_loss_decreases_over_50_steps():
    model = tiny_ijepa(seed=0)
    sampler = MultiBlockMaskSampler(model.encoder.grid_size, min_keep=2)
    opt = build_optimizer(model, OptimConfig())
    sched = Schedules(total_steps=50, warmup_steps=5, start_lr=1e-4, lr=2e-3, final_lr=1e-4)
    data = synthetic_images()
    losses = []
    for step in range(50):
        hp = sched.at(step)
        set_hyperparams(opt, hp["lr"], hp["wd"])
        images = data[(step * 16) % 64 : (step * 16) % 64 + 16]
        masks = sampler(16, step_generator(0, step))
        out = model({"images": images, "context": masks.context, "targets": masks.targets})
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.after_optimizer_step(step, 50)
        losses.append(out.loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert all(math.isfinite(v) for v in losses)
    assert last < 0.6 * first, (first, last)


def test_train_step_updates_target_by_ema():
    model = tiny_ijepa(ema=(0.9, 0.9))
    opt = build_optimizer(model, OptimConfig())
    set_hyperparams(opt, lr=1e-2, weight_decay=0.0)
    target_before = [p.clone() for p in model.target_encoder.parameters()]
    model(mask_batch(torch.randn(4, 1, 16, 16))).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    assert model.after_optimizer_step(0, 100) == {"ema": pytest.approx(0.9)}
    for t, b, o in zip(
        model.target_encoder.parameters(), target_before, model.encoder.parameters(), strict=True
    ):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)


@pytest.mark.parametrize("mode", ["separate", "joint"])
def test_build_ijepa_runs_a_bf16_step_on_cpu(mode):
    cfg = load_config(
        None,
        [
            "model.name=vit_tiny",
            "model.patch_size=4",
            "data.image_size=16",
            "method.predictor.depth=1",
            "method.predictor.dim=48",
            f"method.predictor.mode={mode}",
            "method.masks.min_keep=2",
        ],
    )
    model = build_method(cfg, in_chans=3)
    assert isinstance(model, IJEPA) and model.predictor.mode == mode
    opt = build_optimizer(model, cfg.optim)
    set_hyperparams(opt, 1e-3, 0.04)
    masks = MultiBlockMaskSampler(model.encoder.grid_size, min_keep=2)(2, torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 16, 16)
    with autocast("cpu", torch.bfloat16):
        out = model({"images": x, "context": masks.context, "targets": masks.targets})
        prediction, target, _ = model.predict(x, masks.context, masks.targets)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    model.after_optimizer_step(0, 10)
    assert math.isfinite(out.loss.item()) and prediction.shape == target.shape
