"""Tests for openjepa.train.optim: AdamW over the method's parameter groups (no weight decay on biases and
1-D parameters, the frozen target encoder left out), the schedules, and writing the scheduled values."""

import pytest
import torch

from openjepa.config import load_config
from openjepa.methods import build_method
from openjepa.train.optim import build_optimizer, build_schedules, set_hyperparams
from tests.helpers import TINY


def tiny_method(*extra: str):
    cfg = load_config(None, [*TINY, *extra])
    torch.manual_seed(0)
    return cfg, build_method(cfg, 3)


def test_groups_split_biases_and_1d_params_from_weights():
    cfg, method = tiny_method("optim.weight_decay=0.05")
    optimizer = build_optimizer(method, cfg.optim)
    decay, no_decay = optimizer.param_groups
    names = {id(p): n for n, p in method.named_parameters()}
    assert decay["apply_wd"] is True and decay["weight_decay"] == 0.05
    assert no_decay["apply_wd"] is False and no_decay["weight_decay"] == 0.0
    assert decay["params"] and no_decay["params"]
    for p in decay["params"]:
        assert p.ndim >= 2 and not names[id(p)].endswith("bias"), names[id(p)]
    for p in no_decay["params"]:
        assert p.ndim <= 1 or names[id(p)].endswith("bias"), names[id(p)]
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert "encoder.blocks.0.attn.qkv.bias" in no_decay_names
    assert "encoder.norm.weight" in no_decay_names  # a LayerNorm's weight is 1-D
    assert "encoder.blocks.0.attn.qkv.weight" in {names[id(p)] for p in decay["params"]}


def test_frozen_target_encoder_is_left_out():
    cfg, method = tiny_method()
    optimizer = build_optimizer(method, cfg.optim)
    in_optimizer = [p for g in optimizer.param_groups for p in g["params"]]
    assert len({id(p) for p in in_optimizer}) == len(in_optimizer)  # each parameter once
    trainable = [p for p in method.parameters() if p.requires_grad]
    assert {id(p) for p in in_optimizer} == {id(p) for p in trainable}
    assert not any(p.requires_grad for p in method.target_encoder.parameters())
    target_ids = {id(p) for p in method.target_encoder.parameters()}
    assert not target_ids & {id(p) for p in in_optimizer}
    # the context encoder and the predictor are all in, in registration order
    order = [n for n, p in method.named_parameters() if p.requires_grad]
    assert order[0].startswith("encoder.") and any(n.startswith("predictor.") for n in order)


def test_other_frozen_parameters_are_left_out_too():
    cfg, method = tiny_method()
    method.encoder.pos_embed.requires_grad_(False)
    method.predictor.requires_grad_(False)
    params = {id(p) for g in build_optimizer(method, cfg.optim).param_groups for p in g["params"]}
    assert id(method.encoder.pos_embed) not in params
    assert not params & {id(p) for p in method.predictor.parameters()}
    assert id(method.encoder.blocks[0].attn.qkv.weight) in params


def test_adamw_settings_come_from_the_config():
    cfg, method = tiny_method("optim.lr=0.005", "optim.betas=[0.8, 0.95]", "optim.eps=1e-6")
    optimizer = build_optimizer(method, cfg.optim)
    assert isinstance(optimizer, torch.optim.AdamW)
    for group in optimizer.param_groups:
        assert group["lr"] == 0.005 and group["betas"] == (0.8, 0.95) and group["eps"] == 1e-6


def test_set_hyperparams_updates_lr_everywhere_and_wd_only_where_applied():
    cfg, method = tiny_method()
    optimizer = build_optimizer(method, cfg.optim)
    set_hyperparams(optimizer, 0.123, 0.456)
    decay, no_decay = optimizer.param_groups
    assert decay["lr"] == no_decay["lr"] == 0.123
    assert decay["weight_decay"] == 0.456
    assert no_decay["weight_decay"] == 0.0
    # a group without the flag (a plain optimizer) gets the weight decay
    plain = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2, 2))], lr=1.0)
    set_hyperparams(plain, 0.1, 0.2)
    assert plain.param_groups[0]["lr"] == 0.1 and plain.param_groups[0]["weight_decay"] == 0.2


def test_build_schedules():
    cfg = load_config(None, ["optim.epochs=2", "optim.warmup_epochs=0.5", "optim.schedule_stretch=1.25"])
    schedules, total = build_schedules(cfg.optim, steps_per_epoch=100)
    assert total == 200
    assert schedules.total_steps == 250 and schedules.warmup_steps == 50
    o = cfg.optim
    assert schedules.at(0) == {"lr": pytest.approx(o.start_lr), "wd": pytest.approx(o.weight_decay)}
    assert schedules.at(50)["lr"] == pytest.approx(o.lr)
    assert schedules.at(250) == {"lr": pytest.approx(o.final_lr), "wd": pytest.approx(o.final_weight_decay)}
    _, total = build_schedules(load_config(None, ["optim.epochs=0.001"]).optim, steps_per_epoch=100)
    assert total == 1  # at least one step
