"""Tests for full fine-tuning: layer-decay groups, the LR schedule, the loss, and tiny end-to-end runs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from openjepa.eval.finetune import (
    Classifier,
    FinetuneResult,
    classifier_accuracy,
    finetune,
    finetune_lr,
    layer_decay_groups,
)
from openjepa.models.vit import VisionTransformer


def tiny_vit(seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(img_size=8, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2)


def left_right_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8×8 noisy images whose left half (label 0) or right half (label 1) is bright, values in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.rand(n, 1, 8, 8, generator=g) * 0.5  # (N, 1, 8, 8)
    images[..., :4] += 0.5 * (labels == 0).float().view(-1, 1, 1, 1)
    images[..., 4:] += 0.5 * (labels == 1).float().view(-1, 1, 1, 1)
    return images, labels


def preprocess(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) / 0.3


# --------------------------------------------------------------------------- layer-decay groups


def expected_scale(name: str, decay: float) -> float:
    """Depth 2: patch_embed is layer 0, blocks.i layer i + 1, the final norm and the head layer 3."""
    if name.startswith("encoder.patch_embed."):
        return decay**3
    if name.startswith("encoder.blocks.0."):
        return decay**2
    if name.startswith("encoder.blocks.1."):
        return decay
    assert name.startswith(("encoder.norm.", "head.")), name
    return 1.0


def test_layer_decay_groups_scales_and_weight_decay():
    encoder, head = tiny_vit(), nn.Linear(32, 3)
    groups = layer_decay_groups(encoder, head, base_lr=2.0, layer_decay=0.5, weight_decay=0.05)
    by_name = {name: g for g in groups for name in g["param_names"]}
    params = dict(encoder.named_parameters(prefix="encoder")) | dict(head.named_parameters(prefix="head"))
    assert set(by_name) == set(params)
    for name, group in by_name.items():
        assert group["lr_scale"] == pytest.approx(expected_scale(name, 0.5)), name
        assert group["lr"] == pytest.approx(2.0 * expected_scale(name, 0.5)), name
        no_decay = name.endswith("bias") or params[name].ndim <= 1
        assert group["weight_decay"] == (0.0 if no_decay else 0.05), name
    # spot checks of the rule above on names whose role is known
    assert by_name["encoder.blocks.0.norm1.weight"]["weight_decay"] == 0.0
    assert by_name["encoder.norm.weight"]["weight_decay"] == 0.0
    assert by_name["encoder.patch_embed.proj.weight"]["weight_decay"] == 0.05
    assert by_name["encoder.blocks.1.attn.qkv.weight"]["weight_decay"] == 0.05
    assert by_name["head.weight"]["weight_decay"] == 0.05
    assert by_name["head.bias"]["weight_decay"] == 0.0


def test_layer_decay_groups_cover_every_parameter_once():
    encoder, head = tiny_vit(), nn.Linear(32, 3)
    groups = layer_decay_groups(encoder, head, base_lr=1e-3, layer_decay=0.75, weight_decay=0.05)
    grouped = [id(p) for g in groups for p in g["params"]]
    expected = [id(p) for p in (*encoder.parameters(), *head.parameters())]
    assert len(grouped) == len(set(grouped)) == len(expected)
    assert set(grouped) == set(expected)
    for g in groups:
        assert len(g["params"]) == len(g["param_names"])
    torch.optim.AdamW(groups)  # the groups are valid optimizer input


def test_layer_decay_groups_skip_frozen_and_reject_bad_input():
    encoder, head = tiny_vit(), nn.Linear(32, 3)
    encoder.patch_embed.requires_grad_(False)
    groups = layer_decay_groups(encoder, head, base_lr=1e-3, layer_decay=0.75, weight_decay=0.05)
    names = [n for g in groups for n in g["param_names"]]
    assert not any(n.startswith("encoder.patch_embed.") for n in names)
    with pytest.raises(ValueError, match="layer_decay"):
        layer_decay_groups(encoder, head, base_lr=1e-3, layer_decay=0.0, weight_decay=0.05)
    with pytest.raises(TypeError, match="blocks"):
        layer_decay_groups(nn.Linear(4, 4), head, base_lr=1e-3, layer_decay=0.75, weight_decay=0.05)


# --------------------------------------------------------------------------- schedule and model


def test_finetune_lr_warmup_then_cosine():
    values = {
        s: finetune_lr(s, total_steps=100, warmup_steps=10, peak_lr=1.0, min_lr=0.0) for s in range(100)
    }
    assert values[0] == pytest.approx(0.1)  # the first update already has a non-zero LR
    assert values[4] == pytest.approx(0.5)
    assert values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(0.5 * (1 + math.cos(math.pi * 1 / 90)))
    assert values[54] == pytest.approx(0.5)  # half way through the cosine
    assert values[99] == pytest.approx(0.0)
    cosine = [values[s] for s in range(9, 100)]
    assert all(a >= b for a, b in zip(cosine, cosine[1:], strict=False))
    assert finetune_lr(0, 10, 0, 1.0, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 10)))


def test_classifier_shapes_and_init():
    model = Classifier(tiny_vit(), num_classes=5, generator=torch.Generator().manual_seed(0))
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 5)
    assert torch.all(model.head.bias == 0)
    assert model.head.weight.abs().max() <= 0.02  # truncated at 2σ, σ = 0.01
    assert not list(model.norm.parameters())  # LayerNorm without affine
    with pytest.raises(ValueError, match="embed_dim"):
        Classifier(nn.Sequential(nn.Flatten()), num_classes=2)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def finetuned() -> tuple[VisionTransformer, dict[str, torch.Tensor], FinetuneResult]:
    """One fine-tuning run of a frozen tiny ViT (as a JEPA target encoder is), shared by several tests."""
    encoder = tiny_vit().requires_grad_(False).eval()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    train_x, train_y = left_right_task(256, seed=1)
    test_x, test_y = left_right_task(128, seed=2)
    result = finetune(
        encoder,
        train_x,
        train_y,
        test_x,
        test_y,
        epochs=10,
        batch_size=32,
        lr=2e-2,
        warmup_epochs=1,
        augment=True,
        preprocess=preprocess,
        progress=False,
    )
    return encoder, before, result


def test_finetune_learns_separable_task(finetuned):
    _, _, result = finetuned
    assert result.test_top1 >= 95.0
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.train_loss == result.history[-1]["train_loss"]
    assert [h["epoch"] for h in result.history] == list(range(1, 11))
    assert result.settings["steps_per_epoch"] == 8
    assert result.settings["warmup_steps"] == 8
    assert result.settings["peak_lr"] == pytest.approx(2e-2 * 32 / 256)
    assert result.settings["num_classes"] == 2
    assert result.history[-1]["lr"] == pytest.approx(1e-6)  # the cosine ends at min_lr
    assert not result.model.training


def test_finetune_leaves_callers_encoder_unchanged(finetuned):
    encoder, before, result = finetuned
    after = encoder.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not encoder.training
    # the copy was trained although the caller's encoder is frozen
    tuned = result.model.encoder.state_dict()
    assert not torch.equal(tuned["blocks.0.attn.qkv.weight"], before["blocks.0.attn.qkv.weight"])
    assert not torch.equal(tuned["patch_embed.proj.weight"], before["patch_embed.proj.weight"])


def test_finetune_is_deterministic_given_seed():
    train_x, train_y = left_right_task(64, seed=1)
    test_x, test_y = left_right_task(32, seed=2)

    def run(seed: int) -> FinetuneResult:
        return finetune(
            tiny_vit(),
            train_x,
            train_y,
            test_x,
            test_y,
            epochs=2,
            batch_size=16,
            lr=2e-2,
            augment=True,
            flip=True,
            clip_grad=1.0,
            preprocess=preprocess,
            seed=seed,
            progress=False,
            val_images=test_x,
            val_labels=test_y,
        )

    a, b, c = run(0), run(0), run(1)
    assert a.history == b.history
    assert a.test_top1 == b.test_top1
    for (key, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), key
    assert "val_top1" in a.history[0]
    assert a.history[-1]["val_top1"] == a.test_top1  # same split, same final model
    assert a.history != c.history


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """Reference: (1 − ε)·NLL of the true class + ε·mean over classes of −log p."""
    logp = logits.double().log_softmax(dim=1)  # (B, K)
    nll = -logp.gather(1, labels[:, None]).squeeze(1)  # (B,)
    uniform = -logp.mean(dim=1)  # (B,)
    return ((1 - eps) * nll + eps * uniform).mean()


def test_label_smoothing_enters_the_training_loss():
    train_x, train_y = left_right_task(48, seed=3)
    test_x, test_y = left_right_task(16, seed=4)
    losses = {}
    for eps in (0.0, 0.3):
        # lr = 0 keeps the model at its initial state, so the one-batch epoch loss is the initial loss
        result = finetune(
            tiny_vit(),
            train_x,
            train_y,
            test_x,
            test_y,
            num_classes=4,
            epochs=1,
            batch_size=48,
            lr=0.0,
            min_lr=0.0,
            label_smoothing=eps,
            augment=False,
            preprocess=preprocess,
            progress=False,
        )
        with torch.no_grad():
            logits = result.model(preprocess(train_x))  # (48, 4)
        reference = smoothed_cross_entropy(logits, train_y, eps)
        assert result.train_loss == pytest.approx(reference.item(), rel=1e-5)
        if eps == 0.0:
            assert result.train_loss == pytest.approx(F.cross_entropy(logits, train_y).item(), rel=1e-5)
        losses[eps] = result.train_loss
    assert losses[0.3] != pytest.approx(losses[0.0], rel=1e-3)


def test_classifier_accuracy_restores_mode_and_counts():
    model = Classifier(tiny_vit(), num_classes=2, generator=torch.Generator().manual_seed(0))
    model.train()
    images, labels = left_right_task(10, seed=0)
    acc = classifier_accuracy(model, images, labels, batch_size=3, preprocess=preprocess)
    with torch.no_grad():
        expected = (model(preprocess(images)).argmax(1) == labels).float().mean().item() * 100
    assert acc == pytest.approx(expected)
    assert model.training


def test_finetune_rejects_bad_input():
    x, y = left_right_task(8, seed=0)
    kwargs = {"epochs": 1, "progress": False, "preprocess": preprocess}
    with pytest.raises(ValueError, match="negative"):
        finetune(tiny_vit(), x, y - 1, x, y, **kwargs)
    with pytest.raises(ValueError, match="labels must have shape"):
        finetune(tiny_vit(), x, y[:4], x, y, **kwargs)
    with pytest.raises(ValueError, match="num_classes"):
        finetune(tiny_vit(), x, y, x, y, num_classes=1, **kwargs)
    with pytest.raises(ValueError, match="val_labels"):
        finetune(tiny_vit(), x, y, x, y, val_images=x, **kwargs)
    uint8 = (x * 255).to(torch.uint8)
    with pytest.raises(ValueError, match="preprocess"):
        finetune(tiny_vit(), uint8, y, uint8, y, epochs=1, progress=False)
