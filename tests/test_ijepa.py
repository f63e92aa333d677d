import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from openjepa.losses.jepa import jepa_loss
from openjepa.masks.multiblock import MultiBlockMaskSampler, step_generator
from openjepa.methods.ijepa import IJEPA, build_ijepa
from openjepa.models.predictor import Predictor
from openjepa.models.vit import VisionTransformer
from openjepa.train.ema import ema_update
from openjepa.train.optim import build_adamw, param_groups, set_hyperparams
from openjepa.train.schedules import Schedules, cosine, linear, warmup_cosine
from openjepa.train.step import train_step


def tiny_ijepa(seed=0, loss="smooth_l1"):
    torch.manual_seed(seed)
    enc = VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2)
    pred = Predictor(enc.grid_size, 32, predictor_dim=16, depth=1, num_heads=2)
    return IJEPA(enc, pred, loss=loss)


# ---- EMA -------------------------------------------------------------------------------------------


def test_ema_formula():
    torch.manual_seed(0)
    online, target = nn.Linear(4, 3), nn.Linear(4, 3)
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    ema_update(target, online, 0.0)  # m = 0 copies
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(t, o)
    with pytest.raises(ValueError):
        ema_update(target, online, 1.5)


def test_target_encoder_starts_as_copy_and_gets_no_gradient():
    model = tiny_ijepa()
    for a, b in zip(model.encoder.parameters(), model.target_encoder.parameters(), strict=True):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
        assert not b.requires_grad
    masks = MultiBlockMaskSampler(4, min_keep=2)(2, torch.Generator().manual_seed(0))
    model(torch.randn(2, 1, 16, 16), masks).loss.backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())


# ---- loss ------------------------------------------------------------------------------------------


def test_forward_matches_hand_computation():
    model = tiny_ijepa()
    x = torch.randn(3, 1, 16, 16)
    masks = MultiBlockMaskSampler(4, min_keep=2)(3, torch.Generator().manual_seed(0))
    out = model(x, masks)
    h = model.target_encoder(x)
    h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
    expected_target = torch.stack([h[b, masks.targets[b]] for b in range(3)])  # (B, M, Kt, D)
    torch.testing.assert_close(out.target, expected_target, rtol=1e-4, atol=1e-4)
    z = model.encoder(x, masks.context)
    expected_pred = model.predictor(z, masks.context, masks.targets)
    torch.testing.assert_close(out.prediction, expected_pred)
    diff = (expected_pred - expected_target).abs()
    huber = torch.where(diff < 1, 0.5 * diff**2, diff - 0.5).mean()
    torch.testing.assert_close(out.loss, huber, rtol=1e-4, atol=1e-6)


def test_loss_kinds():
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 4) * 3
    torch.testing.assert_close(jepa_loss(a, b, "l2"), ((a - b) ** 2).mean())
    torch.testing.assert_close(jepa_loss(a, b), F.smooth_l1_loss(a, b))
    with pytest.raises(ValueError, match="unknown loss"):
        jepa_loss(a, b, "l3")
    with pytest.raises(ValueError, match="unknown loss"):
        tiny_ijepa(loss="cosine")


# ---- schedules -------------------------------------------------------------------------------------


def test_schedule_values_at_chosen_steps():
    s = Schedules(
        total_steps=1000,
        warmup_steps=100,
        start_lr=2e-4,
        lr=1e-3,
        final_lr=1e-6,
        weight_decay=0.04,
        final_weight_decay=0.4,
        ema_start=0.996,
        ema_end=1.0,
    )
    assert s.at(0) == pytest.approx({"lr": 2e-4, "wd": 0.04, "ema": 0.996})
    assert s.at(50)["lr"] == pytest.approx(6e-4)  # halfway through warm-up
    assert s.at(100)["lr"] == pytest.approx(1e-3)
    assert s.at(550)["lr"] == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)  # cosine midpoint
    assert s.at(1000)["lr"] == pytest.approx(1e-6)
    assert s.at(500)["wd"] == pytest.approx(0.22)
    assert s.at(1000)["wd"] == pytest.approx(0.4)
    assert s.at(250)["ema"] == pytest.approx(0.997)
    assert s.at(1000)["ema"] == pytest.approx(1.0)
    assert s.at(5000) == s.at(1000)  # clamped past the end


def test_schedule_functions_are_pure_and_stretchable():
    # the reference's ipe_scale = 1.25: a run of 800 steps only sees 80 % of a 1000-step schedule
    assert warmup_cosine(800, 1000, 0, 1.0, 1.0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.8)))
    assert cosine(0, 10, 1.0, 2.0) == 1.0 and cosine(10, 10, 1.0, 2.0) == pytest.approx(2.0)
    assert linear(3, 4, 0.0, 1.0) == 0.75
    assert [warmup_cosine(i, 10, 2, 0, 1, 0) for i in range(10)] == [
        warmup_cosine(i, 10, 2, 0, 1, 0) for i in range(10)
    ]


# ---- optimizer -------------------------------------------------------------------------------------


def test_no_weight_decay_on_biases_and_1d_params():
    model = tiny_ijepa()
    decay, no_decay = param_groups([model.encoder, model.predictor], 0.05)
    names = {id(p): n for m in (model.encoder, model.predictor) for n, p in m.named_parameters()}
    assert all(p.ndim >= 2 and not names[id(p)].endswith("bias") for p in decay["params"])
    assert all(p.ndim <= 1 or names[id(p)].endswith("bias") for p in no_decay["params"])
    assert any("norm" in names[id(p)] for p in no_decay["params"])
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    n_total = sum(1 for m in (model.encoder, model.predictor) for _ in m.parameters())
    assert len(decay["params"]) + len(no_decay["params"]) == n_total
    opt = build_adamw([model.encoder, model.predictor], weight_decay=0.05)
    set_hyperparams(opt, lr=0.1, weight_decay=0.3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1]


def test_weight_decay_leaves_1d_params_alone():
    """With zero gradients, AdamW only decays: 1-D params must not move."""
    model = tiny_ijepa()
    opt = build_adamw([model.encoder], lr=0.1, weight_decay=0.5)
    norm_before = model.encoder.norm.weight.clone()
    fc_before = model.encoder.blocks[0].mlp.fc1.weight.clone()
    for p in model.encoder.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(model.encoder.norm.weight, norm_before)
    torch.testing.assert_close(model.encoder.blocks[0].mlp.fc1.weight, fc_before * (1 - 0.1 * 0.5))


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
    opt = build_adamw([model.encoder, model.predictor])
    sched = Schedules(total_steps=50, warmup_steps=5, start_lr=1e-4, lr=2e-3, final_lr=1e-4)
    data = synthetic_images()
    losses = []
    for step in range(50):
        hp = sched.at(step)
        batch = data[(step * 16) % 64 : (step * 16) % 64 + 16]
        masks = sampler(16, step_generator(0, step))
        out = train_step(model, opt, batch, masks, hp["lr"], hp["wd"], hp["ema"])
        losses.append(out.loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert all(math.isfinite(v) for v in losses)
    assert last < 0.6 * first, (first, last)


def test_train_step_updates_target_by_ema():
    model = tiny_ijepa()
    opt = build_adamw([model.encoder, model.predictor])
    masks = MultiBlockMaskSampler(4, min_keep=2)(4, torch.Generator().manual_seed(0))
    target_before = [p.clone() for p in model.target_encoder.parameters()]
    train_step(model, opt, torch.randn(4, 1, 16, 16), masks, lr=1e-2, weight_decay=0.0, momentum=0.9)
    for t, b, o in zip(
        model.target_encoder.parameters(), target_before, model.encoder.parameters(), strict=True
    ):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)


@pytest.mark.parametrize("mode", ["separate", "joint"])
def test_build_ijepa_runs_a_bf16_step_on_cpu(mode):
    model = build_ijepa(
        "vit_tiny", img_size=16, patch_size=4, in_chans=3, pred_depth=1, pred_dim=48, pred_mode=mode
    )
    opt = build_adamw([model.encoder, model.predictor])
    masks = MultiBlockMaskSampler(model.encoder.grid_size, min_keep=2)(2, torch.Generator().manual_seed(0))
    out = train_step(
        model, opt, torch.randn(2, 3, 16, 16), masks, 1e-3, 0.04, 0.996, amp_dtype=torch.bfloat16
    )
    assert math.isfinite(out.loss.item()) and out.prediction.shape == out.target.shape
