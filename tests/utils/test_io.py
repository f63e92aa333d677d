"""Tests for openjepa.utils.io: atomic writes, ``weights_only`` loading, refusing files that need pickle,
and the errors for missing, truncated and corrupt files."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from openjepa.utils.io import (
    CONVERT_HINT,
    UnsafePickleError,
    atomic_write,
    atomic_write_text,
    load_torch_file,
    save_torch_file,
)
from tests.helpers import Canary


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
    path = save_torch_file(state, tmp_path / "sub" / "dir" / "ckpt.pt")
    assert path == tmp_path / "sub" / "dir" / "ckpt.pt" and path.is_file()
    loaded = load_torch_file(path)
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


def test_mmap_load_gives_the_same_values(tmp_path):
    state = {"w": torch.randn(16, 16), "step": 3}
    path = save_torch_file(state, tmp_path / "ckpt.pt")
    assert_equal(load_torch_file(path, mmap=True), state)


def test_save_overwrites_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_torch_file({"step": 1}, path)
    save_torch_file({"step": 2}, path)
    assert load_torch_file(path) == {"step": 2}
    assert tmp_files(tmp_path) == []


def test_save_uses_umask_permissions(tmp_path):
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    old = os.umask(0o022)
    try:
        path = save_torch_file({"step": 1}, tmp_path / "ckpt.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_save_is_atomic_when_torch_save_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    good = {"step": 1, "w": torch.randn(8, 8)}
    save_torch_file(good, path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_torch_file({"step": 2, "w": torch.zeros(8, 8)}, path)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert_equal(load_torch_file(path), good)
    assert tmp_files(tmp_path) == []


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "eval.json"
    atomic_write_text(path, '{"knn": 1}')
    assert path.read_text(encoding="utf-8") == '{"knn": 1}'

    def half_then_fail(f):
        f.write(b'{"knn": ')
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write(path, half_then_fail)
    assert path.read_text(encoding="utf-8") == '{"knn": 1}'
    assert tmp_files(tmp_path) == []
    atomic_write(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"
    atomic_write_text(tmp_path / "utf8.txt", "θ̄ ← m·θ̄")
    assert (tmp_path / "utf8.txt").read_text(encoding="utf-8") == "θ̄ ← m·θ̄"
    assert tmp_files(tmp_path) == []


def test_save_rejects_values_weights_only_cannot_load(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_torch_file({"step": 1}, path)
    with pytest.raises(TypeError, match=r"state\['metrics'\]\['loss'\].*numpy"):
        save_torch_file({"step": 2, "metrics": {"loss": np.float64(0.5)}}, path)
    with pytest.raises(TypeError, match="Canary"):
        save_torch_file({"objs": [Canary(str(tmp_path / "m"))]}, path)
    with pytest.raises(TypeError, match="must be a dict"):
        save_torch_file([1, 2], path)
    assert load_torch_file(path) == {"step": 1}
    assert tmp_files(tmp_path) == []


def test_arbitrary_objects_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.ones(2)}, "extra": Canary(str(marker))}, path)

    with pytest.raises(UnsafePickleError) as info:
        load_torch_file(path)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "objects other than tensors and plain containers" in message
    assert "Canary" in message and str(path) in message
    assert "weights_only=False" in message and "torch.save" in message  # how to convert a trusted file
    assert not marker.exists()

    # The caller's own hint replaces the default one.
    with pytest.raises(UnsafePickleError) as info:
        load_torch_file(path, hint="Pass --trust-pickle to convert it.")
    assert "Pass --trust-pickle to convert it." in str(info.value)
    assert CONVERT_HINT not in str(info.value)
    assert not marker.exists()

    # The canary works: a full unpickle would have run its __setstate__.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "unpickled"


def test_trust_pickle_unpickles_with_a_warning(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.ones(2)}, "extra": Canary(str(marker))}, path)
    with pytest.warns(UserWarning, match="trust_pickle"):
        state = load_torch_file(path, trust_pickle=True)
    assert marker.read_text() == "unpickled"
    assert isinstance(state["extra"], Canary) and torch.equal(state["model"]["w"], torch.ones(2))


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_torch_file(path)
    with pytest.raises(IsADirectoryError, match="find_checkpoint"):
        load_torch_file(tmp_path)


@pytest.mark.parametrize("keep_bytes", [0, 10, 200, -50])
def test_truncated_file(tmp_path, keep_bytes):
    path = tmp_path / "ckpt.pt"
    save_torch_file({"w": torch.randn(64, 64), "step": 3}, path)
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])
    with pytest.raises(ValueError, match=r"truncated, corrupt") as info:
        load_torch_file(path)
    assert not isinstance(info.value, UnsafePickleError)  # damage is not reported as a foreign file
    assert str(path) in str(info.value)


def test_garbage_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match=r"truncated, corrupt"):
        load_torch_file(path)


def test_non_dict_checkpoint(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.ones(3), path)
    with pytest.raises(ValueError, match="expected a dict"):
        load_torch_file(path)
