"""Bad input to ``openjepa``: every bad config value and command-line number gets one line on stderr that
names the key, a non-zero exit, no traceback and no run folder; nothing out of range is silently accepted.

The CLI cases run ``openjepa.cli.main`` in-process on the tiny run of ``tests.helpers`` (synthetic images,
CPU), so a value that were accepted would train and write a run folder, and the test would fail.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from openjepa import cli
from openjepa.config import (
    MAX_EPOCHS,
    MAX_SEED,
    Config,
    ConfigError,
    MethodConfig,
    OptimConfig,
    Range,
    bounded,
    check_config,
    check_ranges,
    field_range,
    load_config,
    method_config_class,
    method_names,
)
from openjepa.methods.cjepa import CJEPAConfig
from tests.helpers import TINY, write_empty


def pretrain(tmp_path: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> tuple[int, list[str]]:
    """``openjepa pretrain`` of the tiny run into ``tmp_path/run`` with ``overrides`` last: exit code and the
    lines on stderr. Asserts that nothing was printed to stdout."""
    argv = [
        "pretrain",
        str(write_empty(tmp_path)),
        *TINY,
        f"run.out_dir={tmp_path / 'run'}",
        "run.max_steps=1",
    ]
    code = cli.main([*argv, *overrides])
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err.splitlines()


def assert_one_error_line(code: int, err: list[str], *fragments: str) -> None:
    assert code == 2, err
    assert len(err) == 1, err
    assert err[0].startswith("openjepa: error: "), err
    assert "Traceback" not in err[0]
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])


# (overrides, fragments the one error line must hold)
PRETRAIN_CASES: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("optim.batch_size=0",), ("config key 'optim.batch_size' must be at least 1, got 0",)),
    (("optim.batch_size=-16",), ("config key 'optim.batch_size' must be at least 1, got -16",)),
    (("optim.grad_accum=0",), ("config key 'optim.grad_accum' must be at least 1, got 0",)),
    (("model.patch_size=0",), ("config key 'model.patch_size' must be at least 1, got 0",)),
    (("run.log_every=0",), ("config key 'run.log_every' must be at least 1, got 0",)),
    (("run.checkpoint_every=0",), ("config key 'run.checkpoint_every' must be at least 1, got 0",)),
    (("optim.epochs=1e308",), (f"config key 'optim.epochs' must be in (0, {MAX_EPOCHS}], got 1e+308",)),
    (("optim.epochs=0",), ("config key 'optim.epochs' must be in (0,", "got 0")),
    (("optim.epochs=-1",), ("config key 'optim.epochs' must be in (0,", "got -1")),
    (("optim.warmup_epochs=-1",), ("config key 'optim.warmup_epochs' must be in [0,", "got -1")),
    (("optim.clip_grad=-1",), ("config key 'optim.clip_grad' must be greater than 0, got -1",)),
    (("optim.lr=-0.001",), ("config key 'optim.lr' must be greater than 0, got -0.001",)),
    (("model.depth=0",), ("config key 'model.depth' must be at least 1, got 0",)),
    (("run.max_steps=-1",), ("config key 'run.max_steps' must be at least 1, got -1",)),
    (("run.seed=-1",), (f"config key 'run.seed' must be in [0, {MAX_SEED}], got -1",)),
    ((f"run.seed={2**70}",), (f"config key 'run.seed' must be in [0, {MAX_SEED}], got {2**70}",)),
    (("data.subset=-5",), ("config key 'data.subset' must be at least 1, got -5",)),
    (("data.image_size=15",), ("image size 15x15 is not divisible by patch size 4",)),  # when built
    (("data.crop_scale=[0.9, 0.3]",), ("config key 'data.crop_scale' must be [low, high] with low <= high",)),
    (("method.ema=[0.9, 1.5]",), ("config key 'method.ema' must hold numbers in [0, 1], got [0.9, 1.5]",)),
    (("run.device=tpu",), ("config key 'run.device' must be auto, cpu, cuda, cuda:N or mps, got 'tpu'",)),
    (("run.device=cuda:x",), ("config key 'run.device' must be", "got 'cuda:x'")),
    (("run.out_dir=",), ("config key 'run.out_dir' must name the run folder",)),
    (("optim.lr=[1",), ("override 'optim.lr=[1': the value is not valid YAML", "line 1, column 3")),
    (("optim.lr={a",), ("override 'optim.lr={a': the value is not valid YAML",)),
    ((f"optim.lr={10**400}",), ("config key 'optim.lr' must be a finite number",)),
    # C-JEPA's VICReg statistics are per micro-batch, so accumulation would change what they compute
    (("method=cjepa", "optim.grad_accum=2"), ("optim.grad_accum=2", "method.beta_vicreg", "per-process")),
    (("method=cjepa", "method.reading=A", "method.masks.num_targets=1"), ("method.masks.num_targets >= 2",)),
    (("method=cjepa", "method.reading=B", "method.inv=false"), ("method.inv=false", "method.reading=B")),
    (("method=cjepa", "method.var_cov=false", "method.inv=false"), ("method.var_cov and method.inv",)),
]


@pytest.mark.parametrize(("overrides", "fragments"), PRETRAIN_CASES, ids=lambda v: " ".join(v)[:40])
def test_bad_config_value_is_one_line_and_writes_nothing(tmp_path, capsys, overrides, fragments):
    code, err = pretrain(tmp_path, capsys, *overrides)
    assert_one_error_line(code, err, *fragments)
    assert not (tmp_path / "run").exists()


def test_an_old_key_out_of_range_names_the_new_key_after_the_layout_warning(tmp_path, capsys):
    code, err = pretrain(tmp_path, capsys, "model.pred_depth=-1")
    assert code == 2 and len(err) == 2, err
    assert (
        err[0].startswith("openjepa: warning: ")
        and "model.pred_depth is now method.predictor.depth" in err[0]
    )
    assert err[1] == "openjepa: error: config key 'method.predictor.depth' must be at least 1, got -1"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("inside", [False, True], ids=["file", "inside-a-file"])
def test_out_dir_naming_a_file(tmp_path, capsys, inside):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    out_dir = a_file / "run" if inside else a_file
    code, err = pretrain(tmp_path, capsys, f"run.out_dir={out_dir}")
    assert_one_error_line(code, err, "config key 'run.out_dir' must name a folder", str(out_dir))
    assert a_file.read_text() == "not a folder"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu(tmp_path, capsys, device):
    code, err = pretrain(tmp_path, capsys, f"run.device={device}")
    assert_one_error_line(code, err, f"device '{device}'", "no CUDA device is available; use cpu or auto")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="checks the error on a machine without MPS")
def test_mps_without_mps(tmp_path, capsys):
    code, err = pretrain(tmp_path, capsys, "run.device=mps")
    assert_one_error_line(code, err, "device 'mps'", "no MPS device is available")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("optim:\n  lr: [1\n", "line 3, column 1"), ("optim: {lr: 1\n", "expected ',' or '}'")],
)
def test_yaml_syntax_error_in_the_file(tmp_path, capsys, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code = cli.main(["pretrain", str(path), f"run.out_dir={tmp_path / 'run'}"])
    assert_one_error_line(code, capsys.readouterr().err.splitlines(), f"{path} is not valid YAML", fragment)


def test_a_config_that_is_not_text_or_not_a_file(tmp_path, capsys):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert_one_error_line(
        cli.main(["pretrain", str(binary)]), capsys.readouterr().err.splitlines(), "cannot read the config"
    )
    assert_one_error_line(
        cli.main(["pretrain", str(tmp_path)]), capsys.readouterr().err.splitlines(), "is a folder"
    )


def test_cjepa_without_var_cov_or_vicreg_may_accumulate() -> None:
    for extra in ("method.beta_vicreg=0", "method.var_cov=false"):
        cfg = load_config(None, ["method=cjepa", "optim.grad_accum=2", extra])
        assert cfg.optim.grad_accum == 2
    assert load_config(None, ["method=ijepa", "optim.grad_accum=2"]).optim.grad_accum == 2
    cfg = Config(method=CJEPAConfig(), optim=OptimConfig(grad_accum=4))
    with pytest.raises(ConfigError, match=r"optim\.grad_accum=4 .*\(method\.var_cov"):
        check_config(cfg)  # an edited config is checked too


# --------------------------------------------------------------------------- the eval / embed options

EVAL_CASES: list[tuple[list[str], str]] = [
    (["eval", "knn", "RUN", "--train-samples", "-5"], "argument --train-samples: must be a whole number"),
    (["eval", "knn", "RUN", "--test-samples", "0"], "argument --test-samples: must be a whole number"),
    (["eval", "knn", "RUN", "--k", "10", "0"], "argument --k: must be a whole number of at least 1, got '0'"),
    (["eval", "knn", "RUN", "--device", "tpu"], "argument --device: must be auto, cpu, cuda, cuda:N or mps"),
    (["eval", "linear", "RUN", "--epochs", "0"], "argument --epochs: must be a whole number"),
    (
        ["eval", "linear", "RUN", "--lrs", "1e-3", "-1"],
        "argument --lrs: must be a finite number greater than 0",
    ),
    (["eval", "linear", "RUN", "--lrs", "inf"], "argument --lrs: must be a finite number greater than 0"),
    (
        ["eval", "linear", "RUN", "--seed", "-1"],
        f"argument --seed: must be a whole number in [0, {MAX_SEED}]",
    ),
    (["eval", "finetune", "RUN", "--ft-epochs", "-2"], "argument --ft-epochs: must be a whole number"),
    (["eval", "finetune", "RUN", "--ft-lr", "0"], "argument --ft-lr: must be a finite number greater than 0"),
    (
        ["eval", "finetune", "RUN", "--ft-layer-decay", "1.5"],
        "argument --ft-layer-decay: must be a number in",
    ),
    (["eval", "finetune", "RUN", "--ft-batch-size", "x"], "argument --ft-batch-size: must be a whole number"),
    (["eval", "lowshot", "RUN", "--fractions", "0"], "argument --fractions: must be a number in (0, 1]"),
    (["embed", "RUN", "--out", "f.npz", "--last-k", "0"], "argument --last-k: must be a whole number"),
    (["embed", "RUN", "--out", "f.npz", "--samples", "-1"], "argument --samples: must be a whole number"),
    (
        ["embed", "RUN", "--out", "f.npz", "--batch-size", "0"],
        "argument --batch-size: must be a whole number",
    ),
]


@pytest.mark.parametrize(
    ("argv", "fragment"), EVAL_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_bad_command_line_number_is_one_usage_line(tmp_path, capsys, argv, fragment):
    run = tmp_path / "run"  # does not exist: the option is refused before the run is looked at
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(run) if a == "RUN" else a for a in argv])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.splitlines()
    assert len(err) == 1, err
    command = " ".join(argv[:2]) if argv[0] == "eval" else argv[0]
    assert err[0].startswith(f"openjepa {command}: error: {fragment}"), err[0]
    assert err[0].endswith(f"(see openjepa {command} --help)")
    assert not run.exists()


def test_good_command_line_numbers_parse() -> None:
    args = cli.build_parser().parse_args(
        ["eval", "lowshot", "r", "--fractions", "0.01", "1", "--lrs", "1e-3", "--seed", str(MAX_SEED)]
    )
    assert args.fractions == [0.01, 1.0] and args.lrs == [1e-3] and args.seed == MAX_SEED
    assert (
        cli.build_parser().parse_args(["eval", "knn", "r", "--device", "cuda:3", "--k", "1"]).device
        == "cuda:3"
    )


# --------------------------------------------------------------------------- every numeric key has a range


def _config_classes() -> list[tuple[type, str, str]]:
    """(config class, key prefix, method name) of every section and nested section, for every method."""
    out: list[tuple[type, str, str]] = []

    def walk(cls: type, prefix: str, method: str) -> None:
        out.append((cls, prefix, method))
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp) and tp is not MethodConfig:
                walk(typing.cast(type, tp), f"{prefix}{f.name}.", method)

    for name in method_names():
        walk(method_config_class(name), "method.", name)
    for f in dataclasses.fields(Config):
        if f.name != "method":
            walk(typing.get_type_hints(Config)[f.name], f"{f.name}.", method_names()[0])
    return out


def _numbers_in(tp: Any) -> type | None:
    """``int`` or ``float`` when a config type holds numbers (maybe optional, maybe a list), else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType, tuple):
        found = {_numbers_in(a) for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis}
        found.discard(None)
        return found.pop() if len(found) == 1 else None
    return tp if tp in (int, float) else None


def _numeric_fields() -> list[tuple[str, str, Any, Range | None, Any]]:
    """(key, method, type, range, default) of every numeric field; an optional pair that defaults to null
    (``method.view_crop_scale``) gets an in-range example pair as its default."""
    rows = []
    for cls, prefix, method in _config_classes():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if _numbers_in(hints[f.name]) is not None:
                rng, default = field_range(f), getattr(cls(), f.name)
                if default is None and rng is not None and rng.ascending:
                    default = (_inside(rng),) * 2
                rows.append((f"{prefix}{f.name}", method, hints[f.name], rng, default))
    return rows


def _inside(rng: Range) -> float:
    """A number inside ``rng``: its closed high bound, or just above its low one."""
    if rng.high is not None and not rng.high_open:
        return float(rng.high)
    return float(rng.low) + 0.5 if rng.low is not None else 1.0


NUMERIC = _numeric_fields()


def test_every_numeric_key_declares_its_range() -> None:
    assert len(NUMERIC) > 50
    missing = sorted({key for key, _, _, rng, _ in NUMERIC if rng is None})
    assert not missing, f"numeric config keys without a range (use bounded(...)): {missing}"


def _outside(rng: Range, tp: Any, default: Any) -> list[Any]:
    """Values just outside ``rng`` (below its low bound, above its high one) as a key of type ``tp`` takes
    them: a number, or a list whose first number is out of range."""
    step = 1 if _numbers_in(tp) is int else 0.5
    numbers = []
    if rng.low is not None:
        numbers.append(rng.low if rng.low_open else rng.low - step)
    if rng.high is not None:
        numbers.append(rng.high if rng.high_open else rng.high + step)
    if "tuple" not in str(tp):
        return numbers
    rest = list(default[1:]) if isinstance(default, tuple) and len(default) == 2 else []
    return [[n, *rest] for n in numbers]


@pytest.mark.parametrize(
    ("key", "method", "tp", "rng", "default"), NUMERIC, ids=[f"{m}:{k}" for k, m, *_ in NUMERIC]
)
def test_every_numeric_key_refuses_a_value_out_of_range(key, method, tp, rng, default) -> None:
    bad_values = _outside(rng, tp, default)
    assert bad_values
    for bad in bad_values:
        with pytest.raises(ConfigError, match=rf"^config key '{re.escape(key)}' must .*, got "):
            load_config(None, [f"method={method}", f"{key}={json.dumps(bad)}"])
    shown = json.dumps(list(default) if isinstance(default, tuple) else default)
    load_config(None, [f"method={method}", f"{key}={shown}"])  # the default is in range


@pytest.mark.parametrize(
    ("key", "method", "default"),
    [(key, method, default) for key, method, _, rng, default in NUMERIC if rng is not None and rng.ascending],
)
def test_every_range_pair_must_not_fall(key, method, default) -> None:
    with pytest.raises(ConfigError, match=rf"^config key '{key}' must be \[low, high\] with low <= high"):
        load_config(None, [f"method={method}", f"{key}=[{default[1] * 0.9}, {default[1] * 0.8}]"])


def test_a_plugin_method_config_uses_the_same_ranges_and_check_hook() -> None:
    @dataclass
    class ProbeConfig(MethodConfig):
        name: str = "probe"
        width: int = bounded(3, ge=1)
        scale: tuple[float, float] = bounded((0.2, 1.0), gt=0, le=1, ascending=True)

        def check(self, cfg: Config) -> None:
            if self.width > cfg.optim.batch_size:
                raise ConfigError("method.width must not exceed optim.batch_size")

    check_ranges(ProbeConfig(), "method.")
    with pytest.raises(ConfigError, match=r"^config key 'method.width' must be at least 1, got 0$"):
        check_ranges(ProbeConfig(width=0), "method.")
    with pytest.raises(ConfigError, match=r"^config key 'method.scale' must hold numbers in \(0, 1\]"):
        check_config(Config(method=ProbeConfig(scale=(0.0, 1.0))))
    with pytest.raises(ConfigError, match="method.width must not exceed optim.batch_size"):
        check_config(Config(method=ProbeConfig(width=300)))
    check_config(Config(method=ProbeConfig(width=256)))


def test_bounded_refuses_two_bounds_on_one_side() -> None:
    with pytest.raises(ValueError, match="at most one lower bound"):
        bounded(1, ge=0, gt=0)


def test_range_reads_in_words_and_symbols() -> None:
    assert Range(low=1).text() == "at least 1" and Range(low=1).symbols() == "≥ 1"
    assert (
        Range(low=0, low_open=True).text() == "greater than 0"
        and Range(low=0, low_open=True).symbols() == "> 0"
    )
    assert Range(low=0, high=1, low_open=True).text() == "in (0, 1]"
    assert Range(high=1, high_open=True).text() == "less than 1"
    assert not Range(low=0).admits(float("nan"))


def test_a_cuda_device_number_beyond_the_machine(monkeypatch) -> None:
    from openjepa.runtime.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"^device 'cuda:2' was asked for but this machine has 2 CUDA"):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"^unknown device 'meta'; use auto, cpu, cuda, cuda:N or mps$"):
        resolve_device("meta")
