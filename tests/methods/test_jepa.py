"""The JEPA core: a step's batch (crops and masks per global batch, sliced by rows), the AdamW parameter
groups, and the encoder roles."""

import pytest
import torch

from openjepa.config import OptimConfig, load_config
from openjepa.data.augment import PretrainAugment
from openjepa.masks.multiblock import MultiBlockMaskSampler
from openjepa.methods import StepContext, build_method
from openjepa.methods.ijepa import IJEPA
from openjepa.methods.jepa import JEPA, build_networks
from openjepa.models.predictor import Predictor
from openjepa.models.vit import VisionTransformer
from openjepa.rng import Stream, step_generator
from openjepa.train.optim import build_optimizer, set_hyperparams

GLOBAL_BATCH = 8


def tiny_ijepa(seed=0):
    torch.manual_seed(seed)
    enc = VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2)
    pred = Predictor(enc.grid_size, 32, predictor_dim=16, depth=1, num_heads=2)
    return IJEPA(enc, pred, MultiBlockMaskSampler(enc.grid_size, min_keep=2))


def context(step, rank=0, world=1, seed=0, augment=None):
    return StepContext(
        step=step,
        seed=seed,
        rank=rank,
        rows=slice(rank, GLOBAL_BATCH, world),
        global_batch=GLOBAL_BATCH,
        device=torch.device("cpu"),
        augment=augment or PretrainAugment(16, (0.5,), (0.25,), crop_scale=(0.3, 1.0), flip=True, seed=seed),
    )


def global_images(seed=0):
    return torch.randint(
        0, 256, (GLOBAL_BATCH, 1, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


# ---- prepare_batch -----------------------------------------------------------------------------------


def test_batch_has_the_shapes_the_forward_needs():
    model = tiny_ijepa()
    batch = model.prepare_batch(global_images(), context(3))
    assert set(batch) == {"images", "context", "targets", "context_len"}
    assert torch.equal(batch["context_len"], torch.full((GLOBAL_BATCH,), batch["context"].shape[1]))
    assert batch["images"].shape == (GLOBAL_BATCH, 1, 16, 16) and batch["images"].dtype == torch.float32
    assert batch["context"].shape[0] == GLOBAL_BATCH and batch["context"].dtype == torch.long
    assert batch["targets"].shape[:2] == (GLOBAL_BATCH, 4)
    assert model(batch).loss.isfinite()


def test_masks_are_the_step_draw_of_the_masks_stream():
    model = tiny_ijepa()
    batch = model.prepare_batch(global_images(), context(5, seed=7))
    expected = MultiBlockMaskSampler(4, min_keep=2)(GLOBAL_BATCH, step_generator(7 ^ Stream.MASKS, 5))
    assert torch.equal(batch["context"], expected.context)
    assert torch.equal(batch["targets"], expected.targets)


@pytest.mark.parametrize("world", [2, 4])
def test_rows_of_each_process_equal_a_single_process_draw(world):
    """Masks and crops are drawn per global batch and sliced by rows: W processes together see exactly
    the batch one process sees, when contexts are cut over the whole batch (``trim="batch"``)."""
    model = tiny_ijepa()
    model.sampler.trim = "batch"
    images = global_images()
    single = model.prepare_batch(images, context(11))
    for rank in range(world):
        rows = slice(rank, GLOBAL_BATCH, world)
        part = model.prepare_batch(images[rows], context(11, rank, world))
        assert set(part) == set(single)
        for key, value in part.items():
            assert torch.equal(value, single[key][rows]), (key, rank)


def test_batches_are_a_function_of_seed_and_step():
    model = tiny_ijepa()
    images = global_images()
    a = model.prepare_batch(images, context(2))
    b = model.prepare_batch(images, context(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for other in (context(3), context(2, seed=1)):
        c = model.prepare_batch(images, other)
        assert not (c["context"].shape == a["context"].shape and torch.equal(c["context"], a["context"]))
        assert not torch.equal(c["images"], a["images"])


# ---- parameter groups ----------------------------------------------------------------------------------


def test_no_weight_decay_on_biases_and_1d_params():
    model = tiny_ijepa()
    decay, no_decay = model.param_groups(0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim >= 2 and not names[id(p)].endswith("bias") for p in decay["params"])
    assert all(p.ndim <= 1 or names[id(p)].endswith("bias") for p in no_decay["params"])
    assert any("norm" in names[id(p)] for p in no_decay["params"])
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert decay["apply_wd"] and not no_decay["apply_wd"]
    n_total = sum(1 for m in (model.encoder, model.predictor) for _ in m.parameters())
    assert len(decay["params"]) + len(no_decay["params"]) == n_total
    opt = build_optimizer(model, OptimConfig(weight_decay=0.05))
    set_hyperparams(opt, lr=0.1, weight_decay=0.3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1]


def test_frozen_parameters_are_left_out():
    model = tiny_ijepa()
    model.predictor.requires_grad_(False)
    grouped = {id(p) for g in model.param_groups(0.05) for p in g["params"]}
    assert grouped == {id(p) for p in model.encoder.parameters()}
    assert not grouped & {id(p) for p in model.target_encoder.parameters()}


def test_weight_decay_leaves_1d_params_alone():
    """With zero gradients, AdamW only decays: 1-D params must not move."""
    model = tiny_ijepa()
    opt = build_optimizer(model, OptimConfig(lr=0.1, weight_decay=0.5))
    norm_before = model.encoder.norm.weight.clone()
    fc_before = model.encoder.blocks[0].mlp.fc1.weight.clone()
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(model.encoder.norm.weight, norm_before)
    torch.testing.assert_close(model.encoder.blocks[0].mlp.fc1.weight, fc_before * (1 - 0.1 * 0.5))


# ---- encoders ------------------------------------------------------------------------------------------


def test_encoder_roles():
    model = tiny_ijepa()
    assert JEPA.encoders == {"target": "target_encoder", "context": "encoder"}
    assert model.get_encoder() is model.target_encoder  # the first role is the evaluated one
    assert model.get_encoder("target") is model.target_encoder
    assert model.get_encoder("context") is model.encoder
    with pytest.raises(ValueError, match="has no 'student' encoder; choose one of target, context"):
        model.get_encoder("student")


# ---- from a config -------------------------------------------------------------------------------------


def test_networks_and_settings_come_from_the_config():
    cfg = load_config(
        None,
        [
            "data.image_size=16",
            "model.depth=2",
            "model.embed_dim=32",
            "model.num_heads=2",
            "method.predictor.depth=1",
            "method.predictor.dim=16",
            "method.predictor.mode=joint",
            "method.masks.min_keep=3",
            "method.masks.num_targets=2",
            "method.ema=[0.9, 0.95]",
            "method.loss=l2",
        ],
    )
    torch.manual_seed(0)
    model = build_method(cfg, in_chans=1)
    assert isinstance(model, IJEPA)
    assert model.loss_kind == "l2" and model.ema == (0.9, 0.95)
    assert model.sampler.min_keep == 3 and model.sampler.num_targets == 2
    assert model.predictor.mode == "joint" and len(model.predictor.blocks) == 1
    assert model.predictor.blocks[0].attn.num_heads == 2  # predictor.heads null: the encoder's
    torch.manual_seed(0)
    encoder, predictor, _ = build_networks(cfg, in_chans=1)  # same seed, same order: same weights
    for a, b in zip(model.encoder.state_dict().values(), encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(model.predictor.state_dict().values(), predictor.state_dict().values(), strict=True):
        assert torch.equal(a, b)
