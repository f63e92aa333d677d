"""NaN updates, a full disk, temporary files of killed writes, and re-running a finished run."""

import errno
import json
import math
import shutil
import subprocess

import pytest
import torch

from openjepa.cli import main
from openjepa.config import load_config
from openjepa.train.trainer import NonFiniteStateError, Trainer
from openjepa.utils.io import save_torch_file
from openjepa.utils.run_folder import read_checkpoint
from openjepa.utils.state_dict import nonfinite_names
from tests.helpers import metrics, tiny, write_empty


def all_finite(state) -> bool:
    tensors = list(state["model"].values())
    for per_param in state["optimizer"]["state"].values():
        tensors += [v for v in per_param.values() if torch.is_tensor(v)]
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


def test_nonfinite_names_finds_each_bad_tensor():
    named = [
        ("a", torch.ones(3)),
        ("b", torch.tensor([1.0, math.nan])),
        ("i", torch.arange(3)),
        ("c", torch.tensor([math.inf])),
    ]
    assert nonfinite_names(named) == ["b", "c"]
    assert nonfinite_names([("a", torch.zeros(2))]) == []


def test_nan_weights_with_finite_loss_are_never_saved(tmp_path):
    cfg = load_config(None, tiny(tmp_path, "run", "run.max_steps=6", "run.checkpoint_every=2"))
    trainer = Trainer(cfg)
    poisoned = trainer.method.after_optimizer_step

    def poison(step, total):  # the update of step 4 leaves a NaN in one weight; its loss was finite
        if step == 3:
            with torch.no_grad():
                trainer.method.predictor.proj.weight[0, 0] = math.nan
        return poisoned(step, total)

    trainer.method.after_optimizer_step = poison
    with pytest.raises(NonFiniteStateError, match=r"after step 4, .*predictor\.proj\.weight") as err:
        trainer.fit()
    assert "Last good checkpoint" in str(err.value) and "latest.pt" in str(err.value)
    state = read_checkpoint(tmp_path / "run")
    assert state["step"] == 2 and all_finite(state)  # the last good one is kept and is good


def test_huge_learning_rate_never_leaves_a_nonfinite_checkpoint(tmp_path, capsys):
    # the reproduction: optim.lr=1e4 run.precision=fp32 run.checkpoint_every=1
    huge = ("optim.lr=1e4", "optim.start_lr=1e4", "run.checkpoint_every=1", "run.max_steps=30")
    args = tiny(tmp_path, "run", *huge)
    code = main(["pretrain", str(write_empty(tmp_path)), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1, err
    assert "stopped without saving" in err[0] and "Last good checkpoint" in err[0]
    checkpoint = tmp_path / "run" / "checkpoints" / "latest.pt"
    if checkpoint.exists():
        assert all_finite(read_checkpoint(checkpoint))


def test_disk_full_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch, capsys):
    args = tiny(tmp_path, "run", "run.max_steps=4", "run.checkpoint_every=2")
    assert main(["pretrain", str(write_empty(tmp_path)), *args[:-2], "run.max_steps=2"]) == 0
    before = (tmp_path / "run" / "checkpoints" / "latest.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):  # what torch raises when the disk fills in the middle of a write
        real_save({"partial": torch.zeros(10)}, f)
        raise RuntimeError(
            "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing "
            f"file data/0: file write failed ({errno.ENOSPC})"
        )

    monkeypatch.setattr(torch, "save", full_disk)
    code = main(["pretrain", str(write_empty(tmp_path)), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1, err
    assert "could not write" in err[0] and "previous checkpoint is intact" in err[0] and "MB free" in err[0]
    assert (tmp_path / "run" / "checkpoints" / "latest.pt").read_bytes() == before
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))  # the partial write was removed
    monkeypatch.setattr(torch, "save", real_save)
    assert main(["pretrain", str(write_empty(tmp_path)), *args]) == 0  # space is back: it resumes
    assert [m["step"] for m in metrics(tmp_path / "run")] == [1, 2, 3, 4]


def test_temporary_files_of_killed_writes_are_swept(tmp_path, capsys):
    args = tiny(tmp_path, "run", "run.max_steps=1")
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / ".tmp-latest.pt.0a1b2c").write_bytes(b"x" * 3_000_000)
    (tmp_path / "run" / ".tmp-config.yaml.99").write_text("half")
    (checkpoints / "notes.txt").write_text("mine")
    assert main(["pretrain", str(write_empty(tmp_path)), *args]) == 0
    assert "removed 2 temporary file(s)" in capsys.readouterr().out
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest.pt", "notes.txt"]


def test_rerunning_a_finished_run_prints_valid_json(tmp_path, capsys):
    args = tiny(tmp_path, "run", "run.max_steps=2")
    assert main(["pretrain", str(write_empty(tmp_path)), *args]) == 0
    capsys.readouterr()
    assert main(["pretrain", str(write_empty(tmp_path)), *args]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "nothing to train" in out[-2]
    summary = json.loads(out[-1])  # strict JSON: NaN would be rejected below
    assert summary["loss"] is None and summary["step"] == 2
    json.loads(out[-1], parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs (skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()[:100]}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_really_full_disk_keeps_the_previous_checkpoint(tmp_path, small_disk, capsys):
    run_dir = small_disk / "run"
    args = [*tiny(tmp_path, "unused"), f"run.out_dir={run_dir}", "run.checkpoint_every=2"]
    assert main(["pretrain", str(write_empty(tmp_path)), *args, "run.max_steps=2"]) == 0
    before = (run_dir / "checkpoints" / "latest.pt").read_bytes()
    free = shutil.disk_usage(small_disk).free
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (free - 16 * 1024))  # room for a few metrics lines, not for a checkpoint
    capsys.readouterr()
    code = main(["pretrain", str(write_empty(tmp_path)), *args, "run.max_steps=4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1 and "could not write" in err[0] and "intact" in err[0], err
    assert (run_dir / "checkpoints" / "latest.pt").read_bytes() == before
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    filler.unlink()
    assert main(["pretrain", str(write_empty(tmp_path)), *args, "run.max_steps=4"]) == 0
    assert [m["step"] for m in metrics(run_dir)] == [1, 2, 3, 4]


def test_a_disk_with_no_room_at_all_is_one_line_too(tmp_path, small_disk, capsys):
    run_dir = small_disk / "run"
    args = [*tiny(tmp_path, "unused"), f"run.out_dir={run_dir}"]
    assert main(["pretrain", str(write_empty(tmp_path)), *args, "run.max_steps=2"]) == 0
    before = (run_dir / "checkpoints" / "latest.pt").read_bytes()
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * shutil.disk_usage(small_disk).free)  # not a byte left (lock, config, metrics)
    capsys.readouterr()
    code = main(["pretrain", str(write_empty(tmp_path)), *args, "run.max_steps=4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1 and "no space left" in err[0] and "latest.pt" in err[0], err
    assert (run_dir / "checkpoints" / "latest.pt").read_bytes() == before
    filler.unlink()
    assert main(["pretrain", str(write_empty(tmp_path)), *args, "run.max_steps=4"]) == 0
    assert [m["step"] for m in metrics(run_dir)] == [1, 2, 3, 4]


def test_evaluating_nan_weights_is_refused(tmp_path, capsys):
    # a checkpoint holding NaN weights (written by something else) is not evaluated into a meaningless number
    assert main(["pretrain", str(write_empty(tmp_path)), *tiny(tmp_path, "run", "run.max_steps=1")]) == 0
    path = tmp_path / "run" / "checkpoints" / "latest.pt"
    state = read_checkpoint(path)
    state["model"]["target_encoder.blocks.0.mlp.fc1.weight"][0, 0] = math.nan
    save_torch_file(state, path)
    capsys.readouterr()
    assert main(["eval", "knn", str(tmp_path / "run"), "--train-samples", "64", "--test-samples", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN" in err[0] and "blocks.0.mlp.fc1.weight" in err[0], err
