"""Tests for openjepa.train.loggers: metrics.jsonl, TensorBoard, Weights & Biases (offline), and the
loggers as a trainer callback (LoggerCallback, truncate_metrics on resume)."""

import importlib.util
import json
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from openjepa import cli
from openjepa.config import load_config
from openjepa.train import loggers
from openjepa.train.loggers import (
    JsonlLogger,
    LoggerCallback,
    MultiLogger,
    RunLogger,
    build_loggers,
    flatten_metrics,
    truncate_metrics,
)
from openjepa.train.trainer import Trainer
from tests.helpers import TINY

CONFIG = {
    "method": {"name": "ijepa", "ema": [0.996, 1.0]},
    "optim": {"lr": 0.001, "clip_grad": None},
    "run": {"seed": 0, "progress": False},
}


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# ---- the interface and metrics.jsonl ---------------------------------------------------------------------


def test_flatten_metrics_joins_nested_keys_and_keeps_numbers():
    metrics = {"loss": 0.5, "knn": {"top1": 71, "k": {"20": 70.5}}, "note": "ok", "monitor": True, "x": None}
    assert flatten_metrics(metrics) == {"loss": 0.5, "knn/top1": 71, "knn/k/20": 70.5}
    assert flatten_metrics(metrics, numeric_only=False) == {
        "loss": 0.5,
        "knn/top1": 71,
        "knn/k/20": 70.5,
        "note": "ok",
        "monitor": True,
        "x": None,
    }
    with pytest.raises(ValueError, match="'step'"):
        flatten_metrics({"step": 3, "loss": 1.0})


def test_jsonl_lines_are_exactly_step_then_metrics(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    with JsonlLogger(path) as log:
        log.log_metrics({"epoch": 0.25, "loss": 0.5, "lr": 1e-3, "images_per_s": 812.5}, step=1)
        log.log_metrics({}, step=2)  # nothing to log: no line
        log.log_metrics({"monitor": True, "knn": {"top1": 70.0}, "note": "ok", "k": None}, step=3)
        log.log_checkpoint(path)  # checkpoints are not written to the JSONL file
    assert lines(path) == [
        '{"step": 1, "epoch": 0.25, "loss": 0.5, "lr": 0.001, "images_per_s": 812.5}',
        '{"step": 3, "monitor": true, "knn/top1": 70.0, "note": "ok", "k": null}',
    ]


def test_jsonl_fresh_run_starts_afresh_and_resume_appends(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 9.0}\n', encoding="utf-8")
    with JsonlLogger(path, append=True) as log:
        log.log_metrics({"loss": 1.0}, step=2)
    assert lines(path) == ['{"step": 1, "loss": 9.0}', '{"step": 2, "loss": 1.0}']
    with JsonlLogger(path) as log:
        log.log_metrics({"loss": 3.0}, step=1)
    assert lines(path) == ['{"step": 1, "loss": 3.0}']


def test_jsonl_writes_strict_json_and_each_line_in_one_unbuffered_write(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = JsonlLogger(path)
    writes: list[bytes] = []
    real_write = log._file.write
    log._file.write = lambda data: writes.append(bytes(data)) or real_write(data)  # type: ignore[method-assign]
    log.log_metrics({"loss": float("nan"), "lr": float("inf"), "knn": {"top1": 71.0}}, step=1)
    log.log_metrics({"loss": 0.5}, step=2)
    assert lines(path) == [
        '{"step": 1, "loss": null, "lr": null, "knn/top1": 71.0}',
        '{"step": 2, "loss": 0.5}',
    ]
    assert writes == [(line + "\n").encode() for line in lines(path)]  # on disk before close: no buffer
    log.close()


def test_jsonl_append_after_a_torn_line_starts_a_new_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo', encoding="utf-8")
    with JsonlLogger(path, append=True) as log:
        log.log_metrics({"loss": 1.0}, step=2)
    assert lines(path) == ['{"step": 1, "loss": 2.0}', '{"step": 2, "lo', '{"step": 2, "loss": 1.0}']


def test_build_loggers_always_writes_jsonl_and_follows_start_step(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n', encoding="utf-8")
    with build_loggers([], tmp_path, CONFIG, start_step=1) as log:
        assert [type(x) for x in log.loggers] == [JsonlLogger]
        log.log_metrics({"loss": 1.0}, step=2)
    assert lines(tmp_path / "metrics.jsonl") == ['{"step": 1, "loss": 2.0}', '{"step": 2, "loss": 1.0}']
    with build_loggers(["jsonl"], tmp_path, CONFIG) as log:
        assert len(log.loggers) == 1
    assert lines(tmp_path / "metrics.jsonl") == []


def test_build_loggers_on_other_ranks_writes_nothing(tmp_path):
    run = tmp_path / "run"
    with build_loggers(["jsonl"], run, CONFIG, is_main=False) as log:
        assert log.loggers == []
        log.log_metrics({"loss": 1.0}, step=1)
        log.log_checkpoint(run / "latest.pt", aliases=["latest"])
    assert not run.exists()


def test_build_loggers_rejects_unknown_names_and_modes(tmp_path):
    with pytest.raises(ValueError, match="valid loggers: jsonl, tensorboard, wandb"):
        build_loggers(["jsonl", "mlflow"], tmp_path, CONFIG)
    with pytest.raises(ValueError, match="'online', 'offline', 'disabled'"):
        build_loggers(["wandb"], tmp_path, CONFIG, wandb_mode="cloud")


@pytest.mark.parametrize("name", ["tensorboard", "wandb"])
def test_missing_package_names_the_extra_on_every_rank(tmp_path, monkeypatch, name):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda pkg, *a: None if pkg == name else real(pkg, *a))
    for is_main in (True, False):
        with pytest.raises(ImportError, match=rf"pip install openjepa\[{name}\]"):
            build_loggers([name], tmp_path / "run", CONFIG, is_main=is_main)
    assert not (tmp_path / "run").exists()


def test_build_loggers_closes_what_it_opened_when_a_logger_fails(tmp_path, monkeypatch):
    def failing_wandb(*args, **kwargs):
        raise RuntimeError("wandb.init failed")

    closed: list[Path] = []
    monkeypatch.setattr(loggers, "_require", lambda name: None)
    monkeypatch.setattr(loggers, "WandbLogger", failing_wandb)
    monkeypatch.setattr(JsonlLogger, "close", lambda self: closed.append(self.path))
    with pytest.raises(RuntimeError, match="wandb.init failed"):
        build_loggers(["wandb"], tmp_path, CONFIG, wandb_mode="online")
    assert closed == [tmp_path / "metrics.jsonl"]


def test_multilogger_fans_out_and_closes_all_despite_a_failure():
    calls: list[tuple] = []

    class Recorder(RunLogger):
        def __init__(self, tag: str, fail_close: bool = False):
            self.tag, self.fail_close = tag, fail_close

        def log_config(self, config):
            calls.append((self.tag, "config", config))

        def log_metrics(self, metrics, step):
            calls.append((self.tag, "metrics", dict(metrics), step))

        def log_checkpoint(self, path, name=None, aliases=(), metadata=None):
            calls.append((self.tag, "checkpoint", path, name, tuple(aliases), metadata))

        def close(self):
            calls.append((self.tag, "close"))
            if self.fail_close:
                raise OSError("disk full")

    multi = MultiLogger([Recorder("a", fail_close=True), Recorder("b")])
    multi.log_config({"x": 1})
    multi.log_metrics({"loss": 1.0}, 5)
    multi.log_checkpoint("best.pt", "m", ["best"], {"step": 5})
    with pytest.raises(OSError, match="disk full"):
        multi.close()
    assert calls == [
        ("a", "config", {"x": 1}),
        ("b", "config", {"x": 1}),
        ("a", "metrics", {"loss": 1.0}, 5),
        ("b", "metrics", {"loss": 1.0}, 5),
        ("a", "checkpoint", "best.pt", "m", ("best",), {"step": 5}),
        ("b", "checkpoint", "best.pt", "m", ("best",), {"step": 5}),
        ("a", "close"),
        ("b", "close"),
    ]


# ---- TensorBoard -------------------------------------------------------------------------------------


def read_tensorboard(log_dir: Path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_scalars_and_config_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    with build_loggers(["tensorboard"], tmp_path, CONFIG) as log:
        for step in (1, 2, 3):
            log.log_metrics({"loss": 1.0 / step, "knn": {"top1": 10.0 * step}, "monitor": True}, step)
    acc = read_tensorboard(tmp_path / "tensorboard")
    assert sorted(acc.Tags()["scalars"]) == ["knn/top1", "loss"]
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [
        (1, 1.0),
        (2, 0.5),
        (3, pytest.approx(1 / 3)),
    ]
    assert [(e.step, e.value) for e in acc.Scalars("knn/top1")] == [(1, 10.0), (2, 20.0), (3, 30.0)]

    text = tensor_util.make_ndarray(acc.Tensors("config/text_summary")[0].tensor_proto).item().decode()
    assert json.loads(text.strip("`\n")) == CONFIG
    start = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["optim.lr"].number_value == 0.001
    assert hparams["method.name"].string_value == "ijepa"
    assert hparams["method.ema"].string_value == "[0.996, 1.0]"
    assert hparams["run.progress"].string_value == "false"


def test_tensorboard_resume_hides_the_steps_logged_again(tmp_path):
    pytest.importorskip("tensorboard")
    with build_loggers(["tensorboard"], tmp_path, CONFIG) as log:
        for step in range(1, 6):
            log.log_metrics({"loss": float(step)}, step)
    # the run crashed after step 5 with its checkpoint at step 3, and resumes there
    with build_loggers(["tensorboard"], tmp_path, CONFIG, start_step=3) as log:
        for step in (4, 5, 6):
            log.log_metrics({"loss": 10.0 * step}, step)
    acc = read_tensorboard(tmp_path / "tensorboard")
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 40.0),
        (5, 50.0),
        (6, 60.0),
    ]


# ---- Weights & Biases (offline) ------------------------------------------------------------------------


def read_wandb_records(path: Path) -> list:
    """The protobuf records of an offline run's ``.wandb`` file.

    The file is a LevelDB-style log (what ``wandb sync`` replays): a 7-byte header, then 32 KiB blocks of
    chunks, each ``crc32 (4) | length (2) | kind (1) | data``; kind 1 is a whole record, 2/3/4 are the
    first/middle/last pieces of one spread over blocks.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "unknown .wandb file format"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B with no network, no console capture, and its home folders inside tmp_path."""
    pytest.importorskip("wandb")
    for key, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_ERROR_REPORTING": "false",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB__DISABLE_STATS": "true",
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb_home" / "config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb_home" / "cache"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb_home" / "data"),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_wandb_offline_run_records_config_metrics_and_checkpoint(tmp_path, offline_wandb):
    import wandb

    run = tmp_path / "demo"
    checkpoint = run / "checkpoints" / "best.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    with build_loggers(["wandb"], run, CONFIG, project="openjepa-test") as log:
        for step in (1, 2, 3):
            log.log_metrics({"loss": 1.0 / step, "knn": {"top1": 10.0 * step}, "monitor": True}, step)
        log.log_checkpoint(checkpoint, aliases=["best", "latest"], metadata={"step": 3, "loss": 0.25})
    # finish() can return before W&B's service has written out the .wandb file; stopping it flushes
    wandb.teardown()

    (wandb_file,) = run.glob("wandb/offline-run-*/run-*.wandb")
    records = read_wandb_records(wandb_file)
    by_kind: dict[str, list] = {}
    for record in records:
        by_kind.setdefault(record.WhichOneof("record_type"), []).append(record)

    (run_record,) = by_kind["run"]
    assert (run_record.run.project, run_record.run.display_name) == ("openjepa-test", "demo")
    config = {item.key: json.loads(item.value_json) for r in by_kind["config"] for item in r.config.update}
    assert {k: config[k] for k in CONFIG} == CONFIG

    history = []
    for r in by_kind["history"]:
        row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
        history.append({k: v for k, v in row.items() if not k.startswith("_") or k == "_step"})
    assert history == [
        {"_step": 1, "loss": 1.0, "knn/top1": 10.0},
        {"_step": 2, "loss": 0.5, "knn/top1": 20.0},
        {"_step": 3, "loss": pytest.approx(1 / 3), "knn/top1": 30.0},
    ]

    (artifact_record,) = by_kind["artifact"]
    artifact = artifact_record.artifact
    assert artifact.type == "model"
    assert artifact.name == f"run-{run_record.run.run_id}-model"
    assert set(artifact.aliases) >= {"best", "latest"}
    assert json.loads(artifact.metadata) == {"step": 3, "loss": 0.25}
    (entry,) = artifact.manifest.contents
    assert entry.path == "best.pt"
    assert Path(entry.local_path).read_bytes() == b"weights"  # W&B's staged copy, uploaded by `wandb sync`


def test_wandb_checkpoint_must_exist(tmp_path, offline_wandb):
    with build_loggers(["wandb"], tmp_path, CONFIG) as log:
        with pytest.raises(FileNotFoundError, match="missing.pt"):
            log.log_checkpoint(tmp_path / "missing.pt", name="model")


def test_importing_the_module_imports_no_optional_package():
    code = (
        "import sys, openjepa.train.loggers; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('wandb', 'tensorboard')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- the loggers as a trainer callback ---------------------------------------------------------------


def write_lines(path: Path, steps: list[int]) -> None:
    path.write_text(
        "".join(json.dumps({"step": s, "loss": float(s)}) + "\n" for s in steps), encoding="utf-8"
    )


def test_truncate_metrics_drops_the_lines_after_the_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_lines(path, [1, 2, 3, 4, 5])
    with path.open("a", encoding="utf-8") as f:
        f.write('{"step": 3, "monitor": true, "knn_top1": 10.0}\n\n')  # a monitor line and a blank one
    truncate_metrics(path, 3)
    assert [json.loads(line) for line in lines(path)] == [
        {"step": 1, "loss": 1.0},
        {"step": 2, "loss": 2.0},
        {"step": 3, "loss": 3.0},
        {"step": 3, "monitor": True, "knn_top1": 10.0},
    ]
    before = path.stat().st_mtime_ns
    truncate_metrics(path, 10)  # nothing after step 10: the file is left alone
    assert path.stat().st_mtime_ns == before and len(lines(path)) == 4
    truncate_metrics(tmp_path / "missing.jsonl", 1)  # no file: nothing to do
    assert not (tmp_path / "missing.jsonl").exists()


def test_truncate_metrics_drops_a_torn_last_line_with_a_notice(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    write_lines(path, [1, 2, 3, 4])
    with path.open("a", encoding="utf-8") as f:
        f.write('{"step": 25, "lo')  # the writer was killed mid-line
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn last line is no cause for a warning
        truncate_metrics(path, 3)
    assert [json.loads(line)["step"] for line in lines(path)] == [1, 2, 3]
    assert (
        capsys.readouterr().out
        == f"{path}: dropped its incomplete last line (the previous run stopped while writing it)\n"
    )
    write_lines(path, [1, 2])
    with path.open("a", encoding="utf-8") as f:
        f.write('{"step": 3, "loss": 3.0}')  # whole, but without its newline: fixed so appends stay apart
    truncate_metrics(path, 5)
    assert path.read_text(encoding="utf-8").endswith('{"step": 3, "loss": 3.0}\n')


def test_truncate_metrics_drops_damaged_lines_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo\x00\n{"step": 3}\n{"step": 4}\n', encoding="utf-8")
    with pytest.warns(UserWarning, match=r"metrics\.jsonl: skipped damaged line 2 "):
        truncate_metrics(path, 3)
    assert lines(path) == ['{"step": 1}', '{"step": 3}']
    before = path.stat().st_mtime_ns
    truncate_metrics(path, 3)  # nothing left to drop: the file is left alone
    assert path.stat().st_mtime_ns == before


def test_resume_survives_torn_and_damaged_metrics_lines(tmp_path, capsys):
    run = tmp_path / "run"
    overrides = [*TINY, f"run.out_dir={run}", "run.checkpoint_every=2"]
    Trainer(load_config(None, [*overrides, "run.max_steps=2"])).fit()
    text = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    (run / "metrics.jsonl").write_text(f"{text[0]}\n#garbage#\n{text[1]}\n" + '{"step": 25, "lo')
    assert cli.main(["info", str(run), "--json"]) == 0  # `openjepa info` reads past them too
    out, err = capsys.readouterr()
    assert json.loads(out)["last_metrics"] == json.loads(text[1])
    warning = f"{run / 'metrics.jsonl'}: skipped damaged line 2 (not a JSON object of metrics)"
    assert err == f"openjepa: warning: {warning}\n"
    with pytest.warns(UserWarning, match="damaged line 2"):
        Trainer(load_config(None, [*overrides, "run.max_steps=3"])).fit()
    assert "dropped its incomplete last line" in capsys.readouterr().out
    assert [json.loads(line)["step"] for line in lines(run / "metrics.jsonl")] == [1, 2, 3]


def test_resumed_run_drops_metrics_lines_after_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    overrides = [*TINY, f"run.out_dir={run}", "run.checkpoint_every=2"]
    Trainer(load_config(None, [*overrides, "run.max_steps=2"])).fit()
    # as if the run had gone on to step 5 and crashed before its next checkpoint
    with (run / "metrics.jsonl").open("a", encoding="utf-8") as f:
        for step in (3, 4, 5):
            f.write(json.dumps({"step": step, "loss": -1.0}) + "\n")
    resumed = Trainer(load_config(None, [*overrides, "run.max_steps=4"]))
    resumed.fit()
    rows = [json.loads(line) for line in lines(run / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["loss"] != -1.0 for r in rows)


def test_fresh_run_starts_metrics_afresh(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_lines(run / "metrics.jsonl", [1, 2, 3, 4, 5, 6, 7])  # left by an earlier run without checkpoint
    Trainer(load_config(None, [*TINY, f"run.out_dir={run}", "run.max_steps=2"])).fit()
    assert [json.loads(line)["step"] for line in lines(run / "metrics.jsonl")] == [1, 2]


def test_logger_callback_opens_forwards_and_closes_the_loggers(tmp_path, monkeypatch):
    calls: list[tuple] = []
    opened: list[dict] = []

    class Recorder(RunLogger):
        def log_metrics(self, metrics, step):
            calls.append(("metrics", step, sorted(metrics)))

        def log_checkpoint(self, path, name=None, aliases=(), metadata=None):
            calls.append(("checkpoint", Path(path).name, list(aliases), metadata))

        def close(self):
            calls.append(("close",))

    def fake_build_loggers(names, run_dir, config, **kwargs):
        opened.append({"names": list(names), "run_dir": Path(run_dir), "config": config, **kwargs})
        return MultiLogger([Recorder()])

    monkeypatch.setattr(loggers, "build_loggers", fake_build_loggers)
    run = tmp_path / "run"
    overrides = [*TINY, f"run.out_dir={run}", "run.wandb_project=p", "run.wandb_name=n"]
    trainer = Trainer(load_config(None, [*overrides, "run.max_steps=2"]))
    assert isinstance(trainer.callbacks[0], LoggerCallback)  # every trainer logs, first
    summary = trainer.fit()
    keys = ["ema", "epoch", "images_per_s", "loss", "lr", "target_std", "wd"]
    assert calls == [
        ("metrics", 1, keys),
        ("metrics", 2, keys),
        ("checkpoint", "latest.pt", ["latest"], {"step": 2, "loss": summary["loss"]}),
        ("close",),
    ]
    (first,) = opened
    assert first["names"] == ["jsonl"] and first["run_dir"] == run and first["start_step"] == 0
    assert first["config"]["method"]["name"] == "ijepa" and first["config"]["run"]["max_steps"] == 2
    assert (first["project"], first["run_name"], first["wandb_mode"], first["is_main"]) == (
        "p",
        "n",
        "offline",
        True,
    )
    # resumed: the loggers are told the step the run continues from
    Trainer(load_config(None, [*overrides, "run.max_steps=3"])).fit()
    assert opened[1]["start_step"] == 2
