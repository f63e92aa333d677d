"""Tests for openjepa.api: the trainer it builds and what ``pretrain`` accepts. (A pretraining run through
the API and loading its encoder back: tests/e2e/test_pretrain.py.)"""

import math

import pytest

import openjepa
from openjepa import api
from openjepa.config import load_config, to_dict
from openjepa.diagnostics.monitor import MonitorCallback
from openjepa.methods import loading
from openjepa.train.callbacks import Callback
from openjepa.train.loggers import LoggerCallback
from openjepa.train.trainer import Trainer
from tests.helpers import TINY


def test_package_exports():
    assert openjepa.pretrain is api.pretrain and openjepa.build_trainer is api.build_trainer
    assert openjepa.load_encoder is api.load_encoder is loading.load_encoder
    assert openjepa.load_model is api.load_model is loading.load_model
    assert api.load_checkpoint_config is loading.load_checkpoint_config
    assert not hasattr(api, "ENCODERS")


def test_build_trainer_adds_the_online_monitor(tmp_path):
    extra = Callback()
    cfg = load_config(
        None,
        [
            *TINY,
            f"run.out_dir={tmp_path}",
            "eval.monitor_every=0.25",
            "eval.monitor_train_samples=40",
            "eval.monitor_k=3",
            "run.keep_best=true",
        ],
    )
    trainer = api.build_trainer(cfg, callbacks=[extra])
    assert isinstance(trainer, Trainer)
    kinds = [type(cb) for cb in trainer.callbacks]
    assert kinds == [LoggerCallback, MonitorCallback, Callback]  # the monitor, then the caller's
    monitor = trainer.callbacks[1]
    assert monitor.every_epochs == 0.25 and monitor.keep_best is True and monitor.best_knn == -math.inf
    assert monitor.options["train_samples"] == 40 and monitor.options["k"] == 3
    assert trainer.callbacks[-1] is extra


def test_build_trainer_without_monitor(tmp_path):
    trainer = api.build_trainer(load_config(None, [*TINY, f"run.out_dir={tmp_path}"]))
    assert not any(isinstance(cb, MonitorCallback) for cb in trainer.callbacks)
    assert MonitorCallback.from_config(trainer.cfg) is None


def test_pretrain_refuses_overrides_with_a_config_object():
    with pytest.raises(ValueError, match="overrides apply to YAML configs"):
        api.pretrain(load_config(None, TINY), ["run.max_steps=1"])


def test_pretrain_from_a_dict(tmp_path):
    data = to_dict(load_config(None, [*TINY, f"run.out_dir={tmp_path / 'run'}", "run.max_steps=1"]))
    summary = api.pretrain(data)
    assert summary["step"] == 1 and summary["out_dir"] == str(tmp_path / "run")
    assert math.isfinite(summary["loss"]) and summary["total_steps"] == 256
    ckpt, cfg = api.load_checkpoint_config(tmp_path / "run")
    assert ckpt["step"] == 1 and to_dict(cfg) == data
