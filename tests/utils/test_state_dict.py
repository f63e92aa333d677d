"""Tests for openjepa.utils.state_dict: strict loading with a readable diff, wrapper prefixes, sub-module
slices."""

import pytest
import torch
from torch import nn

from openjepa.utils.state_dict import (
    CheckpointMismatchError,
    load_state_dict_strict,
    strip_wrapper_prefixes,
    sub_state_dict,
)
from tests.utils.test_io import assert_equal


class Net(nn.Module):
    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, hidden)
        self.fc2 = nn.Linear(hidden, 2)
        self.register_buffer("scale", torch.ones(2))


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_strict_load_strips_wrapper_prefixes(prefix):
    torch.manual_seed(0)
    src = Net()
    src.scale.fill_(3.0)
    sd = {prefix + k: v for k, v in src.state_dict().items()}
    dst = Net()
    load_state_dict_strict(dst, sd)
    assert_equal(dst.state_dict(), src.state_dict())


def test_strict_load_keeps_prefix_the_model_has():
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = Net()

    src, dst = Wrapper(), Wrapper()
    load_state_dict_strict(dst, src.state_dict())
    assert torch.equal(dst.module.fc1.weight, src.module.fc1.weight)


def test_strip_wrapper_prefixes():
    sd = {"module._orig_mod.a.w": 1, "module._orig_mod.b": 2}
    assert strip_wrapper_prefixes(sd) == {"a.w": 1, "b": 2}
    # only a prefix that every key carries is a wrapper's
    assert strip_wrapper_prefixes({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}
    # a prefix the model's own keys carry is kept
    assert strip_wrapper_prefixes({"module.a": 1}, ["module.a"]) == {"module.a": 1}
    assert strip_wrapper_prefixes({}) == {}


def test_sub_state_dict():
    sd = {"target_encoder.w": 1, "target_encoder.blocks.0.b": 2, "encoder.w": 3, "target_encoderx.w": 4}
    assert sub_state_dict(sd, "target_encoder") == {"w": 1, "blocks.0.b": 2}
    assert sub_state_dict(sd, "encoder") == {"w": 3}
    assert sub_state_dict(sd, "predictor") == {}


def test_strict_load_reports_every_kind_of_mismatch():
    dst = Net(hidden=8)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    sd = Net(hidden=5).state_dict()
    del sd["fc2.bias"]
    sd["fc3.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_dict_strict(dst, sd, name="target_encoder")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "'target_encoder'" in message and "Net" in message
    assert "missing keys" in message and "fc2.bias" in message
    assert "unexpected keys" in message and "fc3.weight" in message
    assert "fc1.weight: checkpoint (5, 4) vs model (8, 4)" in message
    assert "fc1.bias: checkpoint (5,) vs model (8,)" in message
    assert "fc2.weight: checkpoint (2, 5) vs model (2, 8)" in message
    assert_equal(dict(dst.state_dict()), before)  # nothing loaded


def test_strict_load_truncates_long_lists():
    dst = nn.Sequential(*[nn.Linear(2, 2) for _ in range(30)])  # 60 keys
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_dict_strict(dst, {"other": torch.zeros(1)})
    message = str(info.value)
    assert "missing keys (in model, not in checkpoint) [60]" in message
    assert "... and 40 more" in message
    assert message.count("\n    ") == 20 + 1 + 1  # 20 listed, the "more" line, one unexpected key


def test_strict_load_rejects_non_tensors_and_non_mappings():
    dst = Net()
    sd = dict(Net().state_dict())
    sd["scale"] = [1.0, 1.0]
    with pytest.raises(CheckpointMismatchError, match=r"scale: checkpoint list vs model \(2,\)"):
        load_state_dict_strict(dst, sd)
    with pytest.raises(TypeError, match="'model' must be a mapping"):
        load_state_dict_strict(dst, [("fc1.weight", torch.zeros(8, 4))])
