import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_run import TINY, torchrun2

import openjepa
from openjepa import cli
from openjepa.config import load_config
from openjepa.train.checkpoint import load_checkpoint
from openjepa.train.loop import NonFiniteLossError, Trainer


def tiny(tmp_path: Path, name: str, *extra: str) -> list[str]:
    return [*TINY, f"run.out_dir={tmp_path / name}", *extra]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


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
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 20 and set(ckpt) >= {"model", "optimizer", "rng", "config", "step"}
    capsys.readouterr()
    assert cli.main(["info", str(run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["step"] == 20 and info["parameters"]["encoder"] == info["parameters"]["target_encoder"]


def write_empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.yaml"
    path.write_text("# all defaults\n")
    return path


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
    resumed = Trainer(crash_cfg)  # a fresh process would build everything anew
    resumed.fit()
    assert resumed.step == 12

    a, b = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 13))  # lines after the checkpoint were not duplicated
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bit-for-bit on CPU
    for (k, va), vb in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(va, vb), k


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    one = Trainer(load_config(None, tiny(tmp_path, "one", "run.max_steps=3")))
    one.fit()
    acc = Trainer(load_config(None, tiny(tmp_path, "acc", "run.max_steps=3", "optim.grad_accum=4")))
    acc.fit()
    for a, b in zip(one.model.parameters(), acc.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_non_finite_loss_stops_with_step_and_last_checkpoint(tmp_path, monkeypatch, capsys):
    import openjepa.methods.ijepa as ijepa

    calls = {"n": 0}
    real = ijepa.jepa_loss

    def poisoned(pred, target, kind="smooth_l1"):
        calls["n"] += 1
        loss = real(pred, target, kind)
        return loss * float("nan") if calls["n"] == 5 else loss  # the 5th training step

    monkeypatch.setattr(ijepa, "jepa_loss", poisoned)
    args = [
        "pretrain",
        str(write_empty(tmp_path)),
        *tiny(tmp_path, "nan", "run.max_steps=10", "run.checkpoint_every=2"),
    ]
    assert cli.main(args) == 3
    err = capsys.readouterr().err
    assert "step 5" in err and "latest.pt" in err
    ckpt = load_checkpoint(tmp_path / "nan" / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 4 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    with pytest.raises(NonFiniteLossError):
        calls["n"] = 0
        Trainer(load_config(None, tiny(tmp_path, "nan2", "run.max_steps=10"))).fit()


def test_config_errors_through_cli(tmp_path, capsys):
    assert cli.main(["pretrain", str(write_empty(tmp_path)), "optim.lrr=1"]) == 2
    assert "optim.lrr" in capsys.readouterr().err
    assert cli.main(["pretrain", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_python_api_pretrain_and_load_encoder(tmp_path):
    summary = openjepa.pretrain(None, tiny(tmp_path, "api", "run.max_steps=3"))
    assert summary["step"] == 3
    encoder = openjepa.load_encoder(tmp_path / "api")
    ckpt = load_checkpoint(tmp_path / "api" / "checkpoints" / "latest.pt")
    torch.testing.assert_close(
        encoder.blocks[0].attn.qkv.weight, ckpt["model"]["target_encoder.blocks.0.attn.qkv.weight"]
    )
    assert not encoder.training
    assert encoder(torch.zeros(2, 3, 16, 16)).shape == (2, 16, 32)
    context = openjepa.load_encoder(tmp_path / "api", which="context")
    assert not torch.equal(context.blocks[0].attn.qkv.weight, encoder.blocks[0].attn.qkv.weight)
    model = openjepa.load_model(tmp_path / "api")
    assert set(dict(model.named_children())) == {"encoder", "predictor", "target_encoder"}


def test_console_script_help():
    script = str(Path(sys.executable).with_name("openjepa"))  # installed beside the interpreter
    out = subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("pretrain", "info", "eval", "config"):
        assert command in out
    out = subprocess.run([script, "pretrain", "--help"], capture_output=True, text=True, check=True).stdout
    assert "resume" in out


def test_torchrun_two_processes_stay_in_sync_and_match_one_process(tmp_path):
    overrides = tiny(tmp_path, "ddp", "run.max_steps=4")
    torchrun2("dist_worker.py", str(tmp_path), *overrides)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key  # ranks identical after the steps

    single = Trainer(load_config(None, tiny(tmp_path, "single", "run.max_steps=4")))
    single.fit()
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(r0[key], value, rtol=1e-4, atol=1e-5)
    ddp_losses = [r["loss"] for r in metrics(tmp_path / "ddp")]
    single_losses = [r["loss"] for r in metrics(tmp_path / "single")]
    assert ddp_losses == pytest.approx(single_losses, rel=1e-4)


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
    Trainer(load_config(None, tiny(tmp_path, "m", *extra))).fit()
    run = tmp_path / "m"
    lines = metrics(run)
    mon = [r for r in lines if r.get("monitor")]
    assert [r["step"] for r in mon] == [0, 16, 32, 48]  # the starting point, then every 16 steps
    for r in mon:
        assert 0 <= r["knn_top1"] <= 100 and 1 <= r["rankme"] <= 32
        assert -1 <= r["mean_cosine"] <= 1 and r["feature_std"] >= 0 and isinstance(r["collapse"], bool)
    assert [r["step"] for r in lines if not r.get("monitor")] == list(range(1, 49))
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    top = max(r["knn_top1"] for r in mon)
    assert best["best_knn"] == top
    assert best["step"] == next(r["step"] for r in mon if r["knn_top1"] == top)
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["best_knn"] == top


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
    trainer = Trainer(cfg)
    with torch.no_grad():  # a constant encoder: every weight zero, so every token is the same vector
        for p in trainer.model.target_encoder.parameters():
            p.zero_()
        trainer.model.target_encoder.pos_embed.zero_()
        trainer.model.target_encoder.norm.bias.fill_(1.0)
    trainer.fit()
    first = next(r for r in metrics(tmp_path / "c") if r.get("monitor"))
    assert first["step"] == 0 and first["collapse"] is True and first["feature_std"] < 1e-3
    assert "look collapsed at step 0" in capsys.readouterr().err


def test_keep_best_without_monitor_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="eval.monitor_every"):
        Trainer(load_config(None, tiny(tmp_path, "x", "run.keep_best=true")))


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
    Trainer(load_config(None, tiny(tmp_path, "tb", *extra))).fit()
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    acc.Reload()
    jsonl = [r for r in metrics(tmp_path / "tb") if not r.get("monitor")]
    losses = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert losses == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in jsonl]
    assert [e.step for e in acc.Scalars("knn_top1")] == [0, 2, 4]
