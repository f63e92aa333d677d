"""The method registry and interface: registration rules, lookup errors, dispatch on ``method.name``,
encoder roles."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from openjepa.config import ConfigError, MethodConfig, load_config
from openjepa.config import sections as config_module
from openjepa.methods import (
    BUILTIN_METHODS,
    Method,
    StepOutput,
    base,
    build_method,
    encoder_attribute,
    get_method,
    register_method,
)
from openjepa.methods.cjepa import CJEPA
from openjepa.methods.ijepa import IJEPA
from openjepa.methods.lejepa import LeJEPA


@pytest.fixture
def registry(monkeypatch):
    """Registrations made by a test are undone after it."""
    monkeypatch.setattr(base, "_METHODS", dict(base._METHODS))
    monkeypatch.setattr(config_module, "_METHOD_CONFIGS", dict(config_module._METHOD_CONFIGS))
    monkeypatch.setattr(config_module, "_DEFAULT_METHOD", list(config_module._DEFAULT_METHOD))


@dataclass
class ToyConfig(MethodConfig):
    name: str = "toy"
    width: int = 3


class Toy(Method):
    name = "toy"
    config_class = ToyConfig
    encoders = {"student": "net", "teacher": "ema_net"}

    def __init__(self, width: int, in_chans: int):
        super().__init__()
        self.net = nn.Linear(in_chans, width)
        self.ema_net = nn.Linear(in_chans, width)

    @classmethod
    def from_config(cls, cfg, in_chans):
        return cls(cfg.method.width, in_chans)

    def forward(self, batch):
        return StepOutput(self.net(batch["images"]).square().mean(), {})


def test_builtin_methods_are_registered():
    assert BUILTIN_METHODS == (IJEPA, CJEPA, LeJEPA)
    assert get_method("ijepa") is IJEPA and get_method("cjepa") is CJEPA and get_method("lejepa") is LeJEPA
    assert load_config(None).method.name == "ijepa"  # the first is the default


def test_register_refuses_a_class_without_a_name(registry):
    class Nameless(Toy):
        name = ""

    with pytest.raises(ValueError, match="Nameless needs a `name` class attribute"):
        register_method(Nameless)


def test_register_refuses_a_class_without_its_config_class(registry):
    class NoConfig(Method):
        name = "no_config"

    with pytest.raises(ValueError, match="needs a `config_class`"):
        register_method(NoConfig)
    with pytest.raises(ConfigError, match="unknown method 'no_config'"):
        get_method("no_config")  # nothing was registered


def test_register_refuses_a_duplicate_name(registry):
    class OtherIJEPA(Toy):
        name = "ijepa"

    with pytest.raises(ValueError, match="a method named 'ijepa' is already registered \\(IJEPA\\)"):
        register_method(OtherIJEPA)
    assert get_method("ijepa") is IJEPA
    assert register_method(IJEPA) is IJEPA  # registering the same class again is harmless


def test_register_refuses_what_is_not_a_method(registry):
    with pytest.raises(ValueError, match="not a subclass of openjepa.methods.Method"):
        register_method(nn.Linear)


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown method 'vjepa'.*registered methods: ijepa, cjepa"):
        get_method("vjepa")
    with pytest.raises(ConfigError, match="did you mean 'cjepa'"):
        get_method("cjepaa")


def test_build_method_dispatches_on_method_name(registry):
    assert register_method(Toy) is Toy
    cfg = load_config(None, ["method.name=toy", "method.width=5"])
    method = build_method(cfg, in_chans=2)
    assert type(method) is Toy and method.net.out_features == 5 and method.net.in_features == 2
    tiny = ["data.image_size=16", "model.depth=1", "model.embed_dim=32", "model.num_heads=2"]
    tiny += ["method.predictor.depth=1", "method.predictor.dim=16", "method.masks.min_keep=2"]
    assert type(build_method(load_config(None, tiny), 1)) is IJEPA
    assert type(build_method(load_config(None, [*tiny, "method=cjepa"]), 1)) is CJEPA


def test_interface_defaults(registry):
    register_method(Toy)
    method = Toy(3, 2)
    assert method.after_optimizer_step(0, 10) == {}
    assert Toy.describe(ToyConfig()) == "toy" and Toy.resume_key(ToyConfig()) == "toy"
    assert method.get_encoder() is method.net and method.get_encoder("teacher") is method.ema_net
    decay, no_decay = method.param_groups(0.1)
    assert decay["params"] == [method.net.weight, method.ema_net.weight]
    assert no_decay["params"] == [method.net.bias, method.ema_net.bias]
    with pytest.raises(NotImplementedError, match="Method must implement forward"):
        Method()({"images": torch.zeros(1)})


def test_encoder_attribute_errors_list_the_roles():
    assert encoder_attribute(IJEPA, None) == "target_encoder"
    assert encoder_attribute(IJEPA, "context") == "encoder"
    with pytest.raises(
        ValueError, match="method 'ijepa' has no 'student' encoder; choose one of target, context"
    ):
        encoder_attribute(IJEPA, "student")
    with pytest.raises(
        ValueError, match="method 'toy' has no 'target' encoder; choose one of student, teacher"
    ):
        encoder_attribute(Toy, "target")
