"""Tests for openjepa.train.trainer: the step, gradient accumulation, stopping on a non-finite loss, the
checks at construction, and the callback states of a checkpoint. Short runs of the tiny config; the long
runs through the command line are in tests/e2e/test_pretrain.py."""

import math

import pytest
import torch

from openjepa import cli
from openjepa.config import ConfigError, load_config
from openjepa.train.callbacks import Callback
from openjepa.train.trainer import NonFiniteLossError, StepResult, Trainer
from openjepa.utils.io import load_torch_file, save_torch_file
from tests.helpers import metrics, tiny, write_empty


def test_train_step_returns_loss_metrics_and_hyperparams(tmp_path):
    trainer = Trainer(load_config(None, tiny(tmp_path, "s")))
    images = next(iter(trainer.stream.iterate(0, 1)))[1]
    result = trainer.train_step(0, images)
    assert isinstance(result, StepResult)
    assert result.loss.ndim == 0 and math.isfinite(result.loss.item())
    assert set(result.metrics) == {"target_std"} and result.metrics["target_std"].item() > 0
    assert set(result.hyperparams) == {"lr", "wd", "ema"}
    assert result.hyperparams["lr"] == pytest.approx(trainer.schedules.at(0)["lr"])
    assert result.hyperparams["ema"] == pytest.approx(0.996)
    assert trainer.step == 0  # train_step does not advance the run; fit does


def test_trainer_attributes(tmp_path):
    trainer = Trainer(load_config(None, tiny(tmp_path, "a", "run.max_steps=5")))
    assert trainer.device == trainer.runtime.device == torch.device("cpu")
    assert not trainer.runtime.dist.enabled and trainer.runtime.dist.world_size == 1
    assert trainer.stream.steps_per_epoch == 256  # 4096 synthetic images at batch 16
    assert (trainer.total_steps, trainer.end_step) == (256, 5)
    assert (trainer.step, trainer.epoch) == (0, 0.0)
    assert trainer.method.name == "ijepa"
    assert [type(cb).__name__ for cb in trainer.callbacks] == ["LoggerCallback"]  # run.progress=false


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    # with the masks cut over the whole batch; per-group trimming differs on purpose (tests/methods)
    one = Trainer(load_config(None, tiny(tmp_path, "one", "run.max_steps=3", "method.masks.trim=batch")))
    one.fit()
    acc_args = ("run.max_steps=3", "optim.grad_accum=4", "method.masks.trim=batch")
    acc = Trainer(load_config(None, tiny(tmp_path, "acc", *acc_args)))
    acc.fit()
    for a, b in zip(one.method.parameters(), acc.method.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_grad_accum_must_divide_the_batch(tmp_path):
    with pytest.raises(ValueError, match=r"per-process batch 16 .* not divisible by optim.grad_accum=3"):
        Trainer(load_config(None, tiny(tmp_path, "x", "optim.grad_accum=3")))


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
    ckpt = load_torch_file(tmp_path / "nan" / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 4 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    with pytest.raises(NonFiniteLossError):
        calls["n"] = 0
        Trainer(load_config(None, tiny(tmp_path, "nan2", "run.max_steps=10"))).fit()


class DeviceLoss:
    """A step's loss as the fit loop must treat it: kept, not read. Reading it any other way than
    through ``detach()`` (what ``Trainer.read_losses`` does) fails the test; ``reads`` records at which
    ``trainer.step`` each loss was read."""

    def __init__(self, loss: torch.Tensor, trainer: Trainer, reads: list[int]):
        self.loss, self.trainer, self.reads = loss, trainer, reads

    def detach(self) -> torch.Tensor:
        self.reads.append(self.trainer.step)
        return self.loss.detach()

    def _host_read(self, *args):
        raise AssertionError("the fit loop read a step's loss outside Trainer.read_losses")

    item = tolist = __float__ = __bool__ = __format__ = _host_read


def record_loss_reads(monkeypatch) -> list[int]:
    """Make every step return its loss as a :class:`DeviceLoss`; the list fills with the read steps."""
    reads: list[int] = []
    real_step = Trainer.train_step

    def step_keeping_the_loss(self, step, images):
        result = real_step(self, step, images)
        return StepResult(DeviceLoss(result.loss, self, reads), result.metrics, result.hyperparams)

    monkeypatch.setattr(Trainer, "train_step", step_keeping_the_loss)
    return reads


def test_the_fit_loop_reads_losses_only_at_log_steps_and_checkpoints(tmp_path, monkeypatch):
    overrides = ("run.max_steps=11", "run.log_every=4", "run.checkpoint_every=6")
    trainer = Trainer(load_config(None, tiny(tmp_path, "r", *overrides)))
    reads = record_loss_reads(monkeypatch)
    summary = trainer.fit()
    # steps 1-4 read at the log step 4; 5-6 before the checkpoint at 6; 7-8 at the log step 8; 9-11 at
    # the last step (its log line and the final checkpoint)
    assert reads == [4, 4, 4, 4, 6, 6, 8, 8, 11, 11, 11]
    logged = [line["loss"] for line in metrics(tmp_path / "r") if "loss" in line]
    assert [line["step"] for line in metrics(tmp_path / "r")] == [4, 8, 11]
    assert summary["loss"] == logged[-1] and all(math.isfinite(x) for x in logged)


def test_a_long_log_interval_still_reads_the_losses_every_max_unread_steps(tmp_path, monkeypatch):
    trainer = Trainer(load_config(None, tiny(tmp_path, "long", "run.max_steps=7", "run.log_every=1000")))
    monkeypatch.setattr(trainer, "max_unread", 3)
    reads = record_loss_reads(monkeypatch)
    trainer.fit()
    assert reads == [3, 3, 3, 6, 6, 6, 7]  # at every 3rd step, then at the end


def test_a_non_finite_loss_between_log_steps_is_caught_before_any_save(tmp_path, monkeypatch):
    import openjepa.methods.ijepa as ijepa

    calls = {"n": 0}
    real = ijepa.jepa_loss

    def poisoned(pred, target, kind="smooth_l1"):
        calls["n"] += 1
        loss = real(pred, target, kind)
        return loss * float("inf") if calls["n"] == 5 else loss

    monkeypatch.setattr(ijepa, "jepa_loss", poisoned)
    overrides = ("run.max_steps=12", "run.log_every=4", "run.checkpoint_every=6")
    trainer = Trainer(load_config(None, tiny(tmp_path, "late", *overrides)))
    with pytest.raises(NonFiniteLossError, match=r"loss is (inf|nan) at step 5;.*Last good checkpoint: none"):
        trainer.fit()
    # read at the checkpoint of step 6, which was not written; the log line of step 4 was
    assert trainer.step == 6 and not (tmp_path / "late" / "checkpoints" / "latest.pt").exists()
    assert [line["step"] for line in metrics(tmp_path / "late")] == [4]


def test_keep_best_without_monitor_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="eval.monitor_every"):
        Trainer(load_config(None, tiny(tmp_path, "x", "run.keep_best=true")))
    # also for a config edited after loading: the trainer checks it again
    cfg = load_config(None, tiny(tmp_path, "x"))
    cfg.run.keep_best = True
    with pytest.raises(ConfigError, match="eval.monitor_every"):
        Trainer(cfg)


def test_plain_trainer_refuses_monitor_every(tmp_path):
    cfg = load_config(None, tiny(tmp_path, "m", "eval.monitor_every=0.5"))
    with pytest.raises(ValueError, match=r"eval.monitor_every is set but no callback.*build_trainer"):
        Trainer(cfg)


# ---- checkpoints: callback states, resuming --------------------------------------------------------------


class StepCounter(Callback):
    """Counts the steps it saw; the count survives a restart under ``callbacks["counter"]``."""

    state_key = "counter"

    def __init__(self) -> None:
        self.steps = 0
        self.loaded: dict | None = None

    def on_step_end(self, trainer):
        self.steps += 1

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.loaded = dict(state)
        self.steps = state["steps"]


def test_callback_states_survive_save_and_resume(tmp_path):
    run = tmp_path / "cb"
    latest = run / "checkpoints" / "latest.pt"
    first = StepCounter()
    Trainer(load_config(None, tiny(tmp_path, "cb", "run.max_steps=2")), callbacks=[first]).fit()
    assert first.steps == 2 and first.loaded is None
    assert load_torch_file(latest)["callbacks"] == {"counter": {"steps": 2}}

    # resumed without the callback: its state is carried over into the new checkpoints untouched
    resumed = Trainer(load_config(None, tiny(tmp_path, "cb", "run.max_steps=4")))
    resumed.fit()
    assert resumed.step == 4
    state = load_torch_file(latest)
    assert state["step"] == 4 and state["callbacks"] == {"counter": {"steps": 2}}
    assert resumed.state_dict()["callbacks"] == {"counter": {"steps": 2}}

    # resumed with it again: it gets its state back and goes on from there
    again = StepCounter()
    Trainer(load_config(None, tiny(tmp_path, "cb", "run.max_steps=6")), callbacks=[again]).fit()
    assert again.loaded == {"steps": 2} and again.steps == 4
    assert load_torch_file(latest)["callbacks"] == {"counter": {"steps": 4}}


def test_checkpoint_holds_the_training_state(tmp_path):
    trainer = Trainer(load_config(None, tiny(tmp_path, "c", "run.max_steps=2")))
    trainer.fit()
    state = load_torch_file(tmp_path / "c" / "checkpoints" / "latest.pt")
    assert state["version"] == 2 and state["method"] == "ijepa" and state["step"] == 2
    assert state["epoch"] == pytest.approx(2 / 256) and state["world_size"] == 1
    assert set(state) == {
        "version",
        "method",
        "step",
        "epoch",
        "model",
        "optimizer",
        "rng",
        "config",
        "world_size",
        "callbacks",
    }
    assert state["config"]["method"]["name"] == "ijepa"
    assert state["config"]["method"]["predictor"]["dim"] == 16


def test_resume_refuses_another_method(tmp_path):
    Trainer(load_config(None, tiny(tmp_path, "r", "run.max_steps=1"))).fit()
    other = Trainer(load_config(None, tiny(tmp_path, "r", "run.max_steps=2", "method.name=cjepa")))
    with pytest.raises(ValueError, match="was trained with method ijepa but the config asks for cjepa"):
        other.fit()


def test_resume_refuses_a_weights_only_checkpoint(tmp_path):
    trainer = Trainer(load_config(None, tiny(tmp_path, "w", "run.max_steps=1")))
    state = trainer.state_dict()
    del state["optimizer"]
    save_torch_file(state, tmp_path / "w" / "checkpoints" / "latest.pt")
    with pytest.raises(ValueError, match="holds weights only"):
        trainer.fit()


def test_a_cpu_without_bf16_says_why_auto_trains_in_fp32(tmp_path, monkeypatch, capsys):
    import openjepa.runtime.device as device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    Trainer(load_config(None, tiny(tmp_path, "auto", "run.precision=auto", "run.max_steps=1"))).fit()
    err = capsys.readouterr().err
    assert err.count("no native bf16") == 1 and "run.precision=auto trains in fp32" in err
    Trainer(load_config(None, tiny(tmp_path, "fp32", "run.max_steps=1"))).fit()  # asked for fp32: no note
    assert "bf16" not in capsys.readouterr().err
