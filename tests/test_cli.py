"""Tests for the ``openjepa`` command line: ``openjepa config`` (and ``--markdown``), the global ``--import``
option, config errors and layout warnings, and the installed console script."""

import subprocess
import sys
from pathlib import Path

from openjepa import cli
from openjepa.config import describe, method_names, reference_markdown
from tests.helpers import REPO, write_empty

PLUGIN = '''
from dataclasses import dataclass

from openjepa.config import MethodConfig
from openjepa.methods import Method, register_method


@dataclass
class ProbeConfig(MethodConfig):
    """A method that only exists in this test.

    Attributes:
        width: how wide.
    """

    name: str = "probe"
    width: int = 3


@register_method
class Probe(Method):
    name = "probe"
    config_class = ProbeConfig
'''


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``python -m openjepa.cli ARGS`` in a fresh process (what a plug-in registers stays there)."""
    cmd = [sys.executable, "-m", "openjepa.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=120)


def test_config_lists_every_key_by_section(capsys):
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out
    header, rest = out.split("\n", 1)
    assert header.startswith("Configuration keys (type = default)")
    assert rest == describe() + "\n"
    lines = out.splitlines()
    for name in method_names():
        assert f"method: {name}:" in lines
    assert "method: ijepa:" in lines and "method: cjepa:" in lines
    for section in ("model", "data", "optim", "run", "eval"):
        assert f"{section}:" in lines
    assert "  method.reading: 'A' | 'B' | 'C' = \"C\"" in lines
    assert "  method.predictor.depth: int ≥ 1 = 6" in lines
    assert "  data.crop_scale: list of 2 × float, each in (0, 1], ascending = [0.3, 1.0]" in lines


def test_config_markdown(capsys):
    assert cli.main(["config", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Configuration reference")
    assert out == reference_markdown()
    for title in (
        "## method: ijepa",
        "## method: cjepa",
        "## model",
        "## data",
        "## optim",
        "## run",
        "## eval",
    ):
        assert f"\n{title}\n" in out
    assert "| `method.predictor.dim` | int ≥ 1 | `96` |" in out
    assert "| `optim.clip_grad` | float > 0 \\| null | `null` |" in out
    assert "| `run.precision` | 'auto' \\| 'fp32' \\| 'bf16' | `\"auto\"` |" in out  # pipes escaped in cells


def test_import_of_a_missing_file_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "missing.py"
    assert cli.main(["--import", str(missing), "config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"openjepa: error: --import {missing}: no such file\n"


def test_import_of_an_unknown_module_is_a_one_line_error(capsys):
    assert cli.main(["--import", "no_such_module_xyz", "config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("openjepa: error: --import no_such_module_xyz: cannot import it")
    assert err.count("\n") == 1


def test_import_registers_a_method_of_ones_own(tmp_path):
    plugin = tmp_path / "probe_method.py"
    plugin.write_text(PLUGIN)
    result = run_cli("--import", str(plugin), "config")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "method: probe:" in lines
    assert "  method.width: int = 3" in lines
    assert "  method.name: 'ijepa' | 'cjepa' | 'lejepa' | 'probe' = \"ijepa\"" in lines
    # without the import, the method is unknown
    result = run_cli("pretrain", str(write_empty(tmp_path)), "method=probe")
    assert result.returncode == 2
    assert "unknown method 'probe'" in result.stderr and "--import" in result.stderr


def test_config_errors_through_cli(tmp_path, capsys):
    assert cli.main(["pretrain", str(write_empty(tmp_path)), "optim.lrr=1"]) == 2
    assert "optim.lrr" in capsys.readouterr().err
    assert cli.main(["pretrain", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_old_config_keys_warn_on_one_line(tmp_path, capsys):
    # the old key is read (with a warning) before the unknown key stops the command
    assert cli.main(["pretrain", str(write_empty(tmp_path)), "model.pred_depth=2", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("openjepa: warning: ") and "read in the current config layout:" in err[0]
    assert "model.pred_depth is now method.predictor.depth" in err[0]
    assert err[1].startswith("openjepa: error:") and "optim.lrr" in err[1]


def test_console_script_help():
    script = str(Path(sys.executable).with_name("openjepa"))  # installed beside the interpreter
    out = subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("pretrain", "info", "eval", "config"):
        assert command in out
    assert "--import MODULE_OR_FILE" in out
    out = subprocess.run([script, "pretrain", "--help"], capture_output=True, text=True, check=True).stdout
    assert "resume" in out
