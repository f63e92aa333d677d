"""Pretraining end to end on the tiny config: the command line, resuming after a crash, two processes
under torchrun, the online monitor and best.pt, the collapse warning, TensorBoard, and the Python API."""

import json
import math

import pytest
import torch

import openjepa
from openjepa import cli
from openjepa.api import build_trainer
from openjepa.config import load_config
from openjepa.train.trainer import Trainer
from openjepa.utils.io import load_torch_file
from tests.helpers import metrics, tiny, torchrun2, write_empty

pytestmark = pytest.mark.slow


def test_20_step_cli_run_end_to_end(tmp_path, capsys):
    assert cli.main(["pretrain", str(write_empty(tmp_path)), *tiny(tmp_path, "run", "run.max_steps=20")]) == 0
    run = tmp_path / "run"
    rows = metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert {"step", "epoch", "loss", "lr", "wd", "ema", "images_per_s", "target_std"} <= set(rows[0])
    assert all(math.isfinite(r["loss"]) and r["target_std"] > 0 for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert (run / "config.yaml").is_file()
    resolved = load_config(run / "config.yaml")
    assert resolved.model.depth == 2 and resolved.run.max_steps == 20
    assert resolved.method.predictor.dim == 16 and resolved.method.masks.min_keep == 2
    ckpt = load_torch_file(run / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 20 and set(ckpt) >= {"model", "optimizer", "rng", "config", "step"}
    assert ckpt["version"] == 2 and ckpt["method"] == "ijepa" and ckpt["callbacks"] == {}
    capsys.readouterr()
    assert cli.main(["info", str(run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["step"] == 20 and info["parameters"]["encoder"] == info["parameters"]["target_encoder"]


def test_resume_after_crash_reproduces_uninterrupted_run(tmp_path, monkeypatch):
    straight = Trainer(load_config(None, tiny(tmp_path, "a", "run.max_steps=12")))
    straight.fit()

    crash_cfg = load_config(None, tiny(tmp_path, "b", "run.max_steps=12", "run.checkpoint_every=4"))
    crashing = Trainer(crash_cfg)
    original = Trainer.train_step

    def crash_at_10(self, step, images):
        if step == 9:  # after steps 1-9 were logged and step 8 was checkpointed
            raise KeyboardInterrupt
        return original(self, step, images)

    monkeypatch.setattr(Trainer, "train_step", crash_at_10)
    with pytest.raises(KeyboardInterrupt):
        crashing.fit()
    monkeypatch.setattr(Trainer, "train_step", original)
    assert [r["step"] for r in metrics(tmp_path / "b")] == list(range(1, 10))  # the crash left steps 1-9
    resumed = Trainer(crash_cfg)  # a fresh process would build everything anew
    resumed.fit()
    assert resumed.step == 12

    a, b = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 13))  # lines after the checkpoint were not duplicated
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bit-for-bit on CPU
    for (k, va), vb in zip(
        straight.method.state_dict().items(), resumed.method.state_dict().values(), strict=True
    ):
        assert torch.equal(va, vb), k


def test_torchrun_two_processes_stay_in_sync_and_match_one_process(tmp_path):
    overrides = tiny(tmp_path, "ddp", "run.max_steps=4")
    torchrun2("dist_worker.py", str(tmp_path), *overrides)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key  # ranks identical after the steps

    # the same groups of 8 rows (2 processes x 1 = 1 process x 2 micro-batches): the same masks
    single = Trainer(load_config(None, tiny(tmp_path, "single", "run.max_steps=4", "optim.grad_accum=2")))
    single.fit()
    for key, value in single.method.state_dict().items():
        torch.testing.assert_close(r0[key], value, rtol=1e-4, atol=1e-5)
    ddp_losses = [r["loss"] for r in metrics(tmp_path / "ddp")]
    single_losses = [r["loss"] for r in metrics(tmp_path / "single")]
    assert ddp_losses == pytest.approx(single_losses, rel=1e-4)
    assert load_torch_file(tmp_path / "ddp" / "checkpoints" / "latest.pt")["world_size"] == 2


def test_online_monitor_logs_knn_and_collapse_metrics_and_keeps_best(tmp_path):
    # synthetic train split: 4096 images -> 256 steps/epoch at batch 16; monitor every 1/16 epoch
    extra = (
        "run.max_steps=48",
        "eval.monitor_every=0.0625",
        "eval.monitor_train_samples=200",
        "eval.monitor_val_samples=100",
        "eval.monitor_k=5",
        "run.keep_best=true",
    )
    build_trainer(load_config(None, tiny(tmp_path, "m", *extra))).fit()
    run = tmp_path / "m"
    lines = metrics(run)
    mon = [r for r in lines if r.get("monitor")]
    assert [r["step"] for r in mon] == [0, 16, 32, 48]  # the starting point, then every 16 steps
    for r in mon:
        assert 0 <= r["knn_top1"] <= 100 and 1 <= r["rankme"] <= 32
        assert -1 <= r["mean_cosine"] <= 1 and r["feature_std"] >= 0 and isinstance(r["collapse"], bool)
    assert [r["step"] for r in lines if not r.get("monitor")] == list(range(1, 49))
    best = load_torch_file(run / "checkpoints" / "best.pt")
    top = max(r["knn_top1"] for r in mon)
    assert best["callbacks"]["online_monitor"]["best_knn"] == top
    assert "best_knn" not in best  # version 2: under the monitor's callback state
    assert best["step"] == next(r["step"] for r in mon if r["knn_top1"] == top)
    assert (
        load_torch_file(run / "checkpoints" / "latest.pt")["callbacks"]["online_monitor"]["best_knn"] == top
    )


def test_collapsed_target_encoder_is_warned_about(tmp_path, capsys):
    cfg = load_config(
        None,
        tiny(
            tmp_path,
            "c",
            "run.max_steps=2",
            "eval.monitor_every=0.0078125",
            "eval.monitor_train_samples=64",
            "eval.monitor_val_samples=32",
        ),
    )
    trainer = build_trainer(cfg)
    with torch.no_grad():  # a constant encoder: every weight zero, so every token is the same vector
        for p in trainer.method.target_encoder.parameters():
            p.zero_()
        trainer.method.target_encoder.pos_embed.zero_()
        trainer.method.target_encoder.norm.bias.fill_(1.0)
    trainer.fit()
    first = next(r for r in metrics(tmp_path / "c") if r.get("monitor"))
    assert first["step"] == 0 and first["collapse"] is True and first["feature_std"] < 1e-3
    assert "the features look collapsed at step 0" in capsys.readouterr().err


def test_tensorboard_logger_receives_training_and_monitor_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    extra = (
        "run.max_steps=4",
        "run.loggers=[jsonl,tensorboard]",
        "eval.monitor_every=0.0078125",
        "eval.monitor_train_samples=64",
        "eval.monitor_val_samples=32",
    )
    build_trainer(load_config(None, tiny(tmp_path, "tb", *extra))).fit()
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    acc.Reload()
    jsonl = [r for r in metrics(tmp_path / "tb") if not r.get("monitor")]
    losses = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert losses == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in jsonl]
    assert [e.step for e in acc.Scalars("knn_top1")] == [0, 2, 4]


def test_python_api_pretrain_and_load_encoder(tmp_path):
    summary = openjepa.pretrain(None, tiny(tmp_path, "api", "run.max_steps=3"))
    assert summary["step"] == 3
    encoder = openjepa.load_encoder(tmp_path / "api")
    ckpt = load_torch_file(tmp_path / "api" / "checkpoints" / "latest.pt")
    torch.testing.assert_close(
        encoder.blocks[0].attn.qkv.weight, ckpt["model"]["target_encoder.blocks.0.attn.qkv.weight"]
    )
    assert not encoder.training
    assert encoder(torch.zeros(2, 3, 16, 16)).shape == (2, 16, 32)
    target = openjepa.load_encoder(tmp_path / "api", which="target")
    assert torch.equal(target.blocks[0].attn.qkv.weight, encoder.blocks[0].attn.qkv.weight)
    context = openjepa.load_encoder(tmp_path / "api", which="context")
    assert not torch.equal(context.blocks[0].attn.qkv.weight, encoder.blocks[0].attn.qkv.weight)
    torch.testing.assert_close(
        context.blocks[0].attn.qkv.weight, ckpt["model"]["encoder.blocks.0.attn.qkv.weight"]
    )
    with pytest.raises(ValueError, match="has no 'student' encoder; choose one of target, context"):
        openjepa.load_encoder(tmp_path / "api", which="student")
    model = openjepa.load_model(tmp_path / "api")
    assert set(dict(model.named_children())) == {"encoder", "predictor", "target_encoder"}
    assert type(model).__name__ == "IJEPA" and not model.training
