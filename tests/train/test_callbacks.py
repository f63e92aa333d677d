"""Tests for openjepa.train.callbacks: the hooks the trainer calls, in order, and the progress bar."""

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from tqdm import tqdm

from openjepa.config import load_config
from openjepa.train.callbacks import Callback, ProgressBar
from openjepa.train.trainer import Trainer
from tests.helpers import TINY


class Recording(Callback):
    """Writes down every hook call with what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_fit_start(self, trainer):
        self.calls.append(("on_fit_start", trainer.step))

    def on_log(self, trainer, record, step):
        self.calls.append(("on_log", step, trainer.step, record["loss"]))

    def on_step_end(self, trainer):
        self.calls.append(("on_step_end", trainer.step))

    def on_checkpoint(self, trainer, path, aliases, metadata):
        self.calls.append(("on_checkpoint", Path(path), list(aliases), dict(metadata)))

    def on_fit_end(self, trainer):
        self.calls.append(("on_fit_end", trainer.step))


def tiny(tmp_path, *extra):
    return load_config(None, [*TINY, f"run.out_dir={tmp_path / 'run'}", *extra])


def test_hooks_are_called_in_order(tmp_path):
    recording = Recording()
    trainer = Trainer(tiny(tmp_path, "run.max_steps=3"), callbacks=[recording])
    assert trainer.callbacks[-1] is recording  # after the trainer's own (the loggers)
    summary = trainer.fit()
    assert [c[0] for c in recording.calls] == [
        "on_fit_start",
        "on_log",
        "on_step_end",
        "on_log",
        "on_step_end",
        "on_log",
        "on_step_end",
        "on_checkpoint",
        "on_fit_end",
    ]
    assert recording.calls[0] == ("on_fit_start", 0)
    logs = [c for c in recording.calls if c[0] == "on_log"]
    assert [(c[1], c[2]) for c in logs] == [(1, 1), (2, 2), (3, 3)]  # the step just done
    assert [c[1] for c in recording.calls if c[0] == "on_step_end"] == [1, 2, 3]
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    assert recording.calls[-2] == ("on_checkpoint", latest, ["latest"], {"step": 3, "loss": summary["loss"]})
    assert logs[-1][3] == summary["loss"]
    assert recording.calls[-1] == ("on_fit_end", 3)


def test_on_fit_end_is_called_when_training_fails(tmp_path, monkeypatch):
    recording = Recording()
    trainer = Trainer(tiny(tmp_path, "run.max_steps=3"), callbacks=[recording])

    def fail(self, step, images):
        raise RuntimeError("boom")

    monkeypatch.setattr(Trainer, "train_step", fail)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit()
    assert [c[0] for c in recording.calls] == ["on_fit_start", "on_fit_end"]


def test_nothing_to_do_gives_no_checkpoint_hook(tmp_path):
    Trainer(tiny(tmp_path, "run.max_steps=1")).fit()
    recording = Recording()
    Trainer(tiny(tmp_path, "run.max_steps=1"), callbacks=[recording]).fit()  # resumed at its end
    assert recording.calls == [("on_fit_start", 1), ("on_fit_end", 1)]


def test_base_callback_does_nothing():
    cb = Callback()
    assert cb.state_key is None and cb.handles == ()
    assert cb.state_dict() == {}
    for hook, args in (
        ("on_fit_start", ()),
        ("on_log", ({"loss": 1.0}, 1)),
        ("on_step_end", ()),
        ("on_checkpoint", (Path("x.pt"), ["latest"], {})),
        ("on_fit_end", ()),
    ):
        assert getattr(cb, hook)(None, *args) is None
    cb.load_state_dict({"anything": 1})


def test_progress_bar_does_nothing_on_other_processes():
    trainer = SimpleNamespace(
        runtime=SimpleNamespace(dist=SimpleNamespace(is_main=False)), end_step=3, step=0
    )
    bar = ProgressBar()
    bar.on_fit_start(trainer)
    assert bar.bar is None
    bar.on_log(trainer, {"loss": 0.5, "lr": 1e-3, "images_per_s": 10.0}, 1)
    bar.on_step_end(trainer)
    bar.on_fit_end(trainer)
    assert bar.bar is None


def test_progress_bar_on_the_main_process(tmp_path, capsys):
    trainer = Trainer(tiny(tmp_path, "run.max_steps=2", "run.progress=true"))
    (bar,) = [cb for cb in trainer.callbacks if isinstance(cb, ProgressBar)]
    seen = []

    class Watch(Callback):
        def on_step_end(self, trainer):
            seen.append((bar.bar.n, bar.bar.total))

    trainer.callbacks.append(Watch())
    trainer.fit()
    assert seen == [(1, 2), (2, 2)]
    assert bar.bar is None  # closed at the end
    assert "pretrain" in capsys.readouterr().err


def test_progress_bar_writes_plain_lines_when_the_output_is_not_a_terminal():
    trainer = SimpleNamespace(
        runtime=SimpleNamespace(dist=SimpleNamespace(is_main=True)), end_step=1000, step=400
    )
    out = io.StringIO()
    bar = ProgressBar(interval=3600.0, stream=out)  # no line is due within this test
    bar.on_fit_start(trainer)
    assert bar.bar is not None and bar.bar.bar is None  # plain lines, no tqdm bar
    for step in range(401, 1001):
        bar.on_step_end(trainer)
        if step % 100 == 0:
            bar.on_log(trainer, {"loss": 0.5, "lr": 1e-3, "images_per_s": 812.5}, step)
    bar.on_fit_end(trainer)
    (line,) = out.getvalue().splitlines()  # 600 updates, one line: the final one
    assert line.startswith("pretrain: 1000/1000 (100%), ")
    assert line.endswith(", loss=0.5000, lr=1.00e-03, img_s=812.5")
    assert bar.bar is None


def test_progress_bar_on_a_terminal_is_a_tqdm_bar():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    trainer = SimpleNamespace(runtime=SimpleNamespace(dist=SimpleNamespace(is_main=True)), end_step=3, step=0)
    out = Terminal()
    bar = ProgressBar(stream=out)
    bar.on_fit_start(trainer)
    assert isinstance(bar.bar.bar, tqdm)
    bar.on_step_end(trainer)
    bar.on_fit_end(trainer)
    assert "pretrain" in out.getvalue() and "\r" in out.getvalue()
