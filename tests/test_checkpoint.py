import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from canary import Canary
from torch import nn

from openjepa.train.checkpoint import (
    CheckpointManager,
    CheckpointMismatchError,
    find_checkpoint,
    load_checkpoint,
    load_state_dict_strict,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def assert_equal(a, b):
    """Deep equality that compares tensors by value, dtype and shape."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_equal(x, y)
    else:
        assert a == b


def stepped_adamw():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(5, 4)).pow(2).sum().backward()
    opt.step()
    return model, opt


def tmp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".tmp-")]


# ---------------------------------------------------------------------------------------------- save/load


def test_round_trip_values(tmp_path):
    model, opt = stepped_adamw()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": 123,
        "lr": 1.5e-4,
        "name": "ijepa-vit-tiny",
        "flag": True,
        "nothing": None,
        "nested": {"list": [1, 2.5, "x", None, torch.arange(3)], "tuple": (1, "a"), "empty": {}},
        "extras": [b"raw", 1 + 2j, torch.Size([2, 3]), torch.bfloat16, torch.device("cpu")],
        "half": torch.randn(2, 2).half(),
    }
    path = save_checkpoint(state, tmp_path / "sub" / "dir" / "ckpt.pt")
    assert path == tmp_path / "sub" / "dir" / "ckpt.pt" and path.is_file()
    loaded = load_checkpoint(path)
    assert_equal(loaded, state)
    assert loaded["optimizer"]["state"][0]["exp_avg"].abs().sum() > 0  # a real, non-trivial optimizer state

    # The loaded optimizer state resumes identically to the original.
    model2 = nn.Linear(4, 3)
    model2.load_state_dict(loaded["model"])
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    opt2.load_state_dict(loaded["optimizer"])
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
    assert torch.equal(model.weight, model2.weight) and torch.equal(model.bias, model2.bias)


def test_save_overwrites_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": 1}, path)
    save_checkpoint({"step": 2}, path)
    assert load_checkpoint(path) == {"step": 2}
    assert tmp_files(tmp_path) == []


def test_save_uses_umask_permissions(tmp_path):
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    old = os.umask(0o022)
    try:
        path = save_checkpoint({"step": 1}, tmp_path / "ckpt.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_save_is_atomic_when_torch_save_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    good = {"step": 1, "w": torch.randn(8, 8)}
    save_checkpoint(good, path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2, "w": torch.zeros(8, 8)}, path)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert_equal(load_checkpoint(path), good)
    assert tmp_files(tmp_path) == []


def test_save_rejects_values_weights_only_cannot_load(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": 1}, path)
    with pytest.raises(TypeError, match=r"state\['metrics'\]\['loss'\].*numpy"):
        save_checkpoint({"step": 2, "metrics": {"loss": np.float64(0.5)}}, path)
    with pytest.raises(TypeError, match="Canary"):
        save_checkpoint({"objs": [Canary(str(tmp_path / "m"))]}, path)
    with pytest.raises(TypeError, match="must be a dict"):
        save_checkpoint([1, 2], path)
    assert load_checkpoint(path) == {"step": 1}
    assert tmp_files(tmp_path) == []


def test_arbitrary_objects_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.ones(2)}, "extra": Canary(str(marker))}, path)

    with pytest.raises(ValueError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "objects other than tensors and plain containers" in message
    assert "Canary" in message and str(path) in message
    assert "weights_only=False" in message and "torch.save" in message  # how to convert a trusted file
    assert not marker.exists()

    # The canary works: a full unpickle would have run its __setstate__.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "unpickled"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(path)
    with pytest.raises(IsADirectoryError, match="find_checkpoint"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("keep_bytes", [0, 10, 200, -50])
def test_truncated_file(tmp_path, keep_bytes):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"w": torch.randn(64, 64), "step": 3}, path)
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])
    with pytest.raises(ValueError, match=r"truncated, corrupt") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_garbage_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match=r"truncated, corrupt"):
        load_checkpoint(path)


def test_non_dict_checkpoint(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.ones(3), path)
    with pytest.raises(ValueError, match="expected a dict"):
        load_checkpoint(path)


# -------------------------------------------------------------------------------------------- strict load


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


# ---------------------------------------------------------------------------------------------- manager


def test_manager_latest_and_milestones(tmp_path):
    run = tmp_path / "run"
    manager = CheckpointManager(run, keep_every_steps=10)
    assert manager.latest_path() is None and manager.list_milestones() == []
    for step in range(0, 35, 5):
        latest = manager.save({"step": step, "w": torch.full((2,), float(step))}, step)
        assert latest == run / "checkpoints" / "latest.pt"
        assert load_checkpoint(latest)["step"] == step

    assert manager.latest_path() == run / "checkpoints" / "latest.pt"
    milestones = manager.list_milestones()
    assert [p.name for p in milestones] == [f"step_{s:08d}.pt" for s in (0, 10, 20, 30)]
    for p, step in zip(milestones, (0, 10, 20, 30), strict=True):
        assert load_checkpoint(p)["step"] == step

    # Replacing latest after a milestone (possibly a hard link) leaves the milestone intact.
    manager.save({"step": 31}, 31)
    assert load_checkpoint(manager.latest_path())["step"] == 31
    assert load_checkpoint(manager.milestone_path(30))["step"] == 30
    assert tmp_files(run / "checkpoints") == []


def test_manager_without_milestones(tmp_path):
    manager = CheckpointManager(tmp_path, keep_every_steps=None)
    for step in (0, 100, 1000):
        manager.save({"step": step}, step)
    assert manager.list_milestones() == []
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.pt"]


def test_manager_validates_arguments(tmp_path):
    with pytest.raises(ValueError, match="keep_every_steps"):
        CheckpointManager(tmp_path, keep_every_steps=0)
    with pytest.raises(ValueError, match="step"):
        CheckpointManager(tmp_path).save({}, -1)


def test_find_checkpoint(tmp_path):
    run = tmp_path / "run"
    manager = CheckpointManager(run, keep_every_steps=1)
    manager.save({"step": 1}, 1)
    latest = run / "checkpoints" / "latest.pt"
    assert find_checkpoint(run) == latest
    assert find_checkpoint(str(run)) == latest
    assert find_checkpoint(run / "checkpoints") == latest
    assert find_checkpoint(manager.milestone_path(1)) == manager.milestone_path(1)


def test_find_checkpoint_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .*empty"):
        find_checkpoint(empty)
    with pytest.raises(FileNotFoundError, match="missing"):
        find_checkpoint(tmp_path / "missing")

    # Only milestones (latest.pt deleted): the error points at them.
    manager = CheckpointManager(tmp_path / "run", keep_every_steps=5)
    manager.save({"step": 5}, 5)
    manager.latest_path().unlink()
    with pytest.raises(FileNotFoundError, match="step_00000005.pt"):
        find_checkpoint(tmp_path / "run")


# -------------------------------------------------------------------------------------------------- RNG


def draws():
    return torch.rand(5), torch.randint(0, 1000, (5,)), random.random()


def test_rng_round_trip_through_checkpoint(tmp_path):
    state = rng_state()
    first = draws()
    path = save_checkpoint({"rng": state}, tmp_path / "rng.pt")  # must survive weights_only loading
    draws()  # advance further
    set_rng_state(load_checkpoint(path)["rng"])
    second = draws()
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert first[2] == second[2]


def test_set_rng_state_validates():
    with pytest.raises(ValueError, match="unknown"):
        set_rng_state({"torch": torch.get_rng_state(), "numpy": 1})
    with pytest.raises(ValueError, match="'torch'"):
        set_rng_state({})
    with pytest.raises(ValueError, match="uint8"):
        set_rng_state({"torch": torch.zeros(3)})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
def test_cuda_states_without_cuda():
    state = {"torch": torch.get_rng_state(), "cuda": [torch.get_rng_state()]}
    with pytest.raises(RuntimeError, match="1 CUDA generator"):
        set_rng_state(state)
    with pytest.warns(UserWarning, match="CUDA"):
        set_rng_state(state, strict=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_round_trip(tmp_path):
    torch.cuda.init()
    state = rng_state()
    assert len(state["cuda"]) == torch.cuda.device_count()
    first = torch.rand(5, device="cuda"), torch.rand(5)
    path = save_checkpoint({"rng": state}, tmp_path / "rng.pt")
    torch.rand(5, device="cuda")
    set_rng_state(load_checkpoint(path, map_location="cuda")["rng"])
    second = torch.rand(5, device="cuda"), torch.rand(5)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
