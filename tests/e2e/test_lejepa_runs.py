"""LeJEPA through the command line like every other method: it trains, resumes bit for bit, evaluates, and two
torchrun processes follow one process on the same global batch."""

import pytest
import torch

from openjepa.api import build_trainer
from openjepa.cli import main
from openjepa.config import load_config
from tests.helpers import TINY, metrics, torchrun2, write_empty

pytestmark = pytest.mark.slow

SMALL = ["method=lejepa", "method.local_views=2", "method.local_size=8", "method.num_slices=32",
         "method.projector=[32,16]"]  # fmt: skip


def run_dir(tmp_path, name, *extra):
    return [*TINY, f"run.out_dir={tmp_path / name}", *SMALL, *extra]


def test_trains_resumes_bit_for_bit_and_evaluates(tmp_path, capsys):
    config = str(write_empty(tmp_path))
    assert main(["pretrain", config, *run_dir(tmp_path, "straight", "run.max_steps=4")]) == 0
    assert main(["pretrain", config, *run_dir(tmp_path, "pieces", "run.max_steps=2")]) == 0
    assert main(["pretrain", config, *run_dir(tmp_path, "pieces", "run.max_steps=4")]) == 0
    straight, pieces = metrics(tmp_path / "straight"), metrics(tmp_path / "pieces")
    assert [r["loss"] for r in pieces] == [r["loss"] for r in straight]  # bit for bit
    assert all(r["sigreg"] > 0 and r["prediction"] >= 0 for r in straight)
    capsys.readouterr()
    run = str(tmp_path / "straight")
    assert main(["eval", "knn", run, "--train-samples", "256", "--test-samples", "128", "--no-progress"]) == 0
    assert "openjepa encoder (step 4, epoch" in capsys.readouterr().out


def test_torchrun_two_processes_match_one_process(tmp_path):
    # with the online monitor's validation loss, which every process computes on its rows (SIGReg all-reduced)
    monitor = ("run.max_steps=3", "eval.monitor_every=0.0078125", "eval.monitor_train_samples=64",
               "eval.monitor_val_samples=40")  # fmt: skip
    overrides = run_dir(tmp_path, "ddp", *monitor)
    torchrun2("dist_worker.py", str(tmp_path), *overrides)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    single = build_trainer(load_config(None, run_dir(tmp_path, "single", *monitor)))
    single.fit()
    for key, value in single.method.state_dict().items():
        torch.testing.assert_close(r0[key], value, rtol=1e-4, atol=1e-5, msg=key)
    ddp, one = metrics(tmp_path / "ddp"), metrics(tmp_path / "single")
    for key in ("loss", "sigreg", "prediction"):
        steps = [r[key] for r in one if not r.get("monitor")]
        assert [r[key] for r in ddp if not r.get("monitor")] == pytest.approx(steps, rel=1e-4), key
    val = [(r["step"], r["val_loss"]) for r in one if r.get("monitor")]
    assert [s for s, _ in val] == [0, 2, 3]
    ddp_val = [(r["step"], r["val_loss"]) for r in ddp if r.get("monitor")]
    assert ddp_val == [(s, pytest.approx(v, rel=1e-4)) for s, v in val]
