"""A method registered from a file under tests/ (no edit of src/) trains through ``openjepa pretrain``, with
its own config keys validated, and its run is evaluated like any other."""

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO, TESTS, TINY

pytestmark = pytest.mark.slow

TOY = str(TESTS / "e2e" / "toy_method.py")
# the tiny run without the JEPA keys, which the toy method does not have
BASE = [o for o in TINY if not o.startswith("method.")] + ["method=noisy_views"]


def openjepa(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "openjepa.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    config = out / "toy.yaml"
    config.write_text("method:\n  name: noisy_views\n  noise: 0.05\n")
    result = openjepa(
        "--import",
        TOY,
        "pretrain",
        str(config),
        *BASE,
        "method.var_weight=2.0",
        "run.max_steps=4",
        f"run.out_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_the_toy_method_trains_and_logs_its_own_metrics(toy_run):
    lines = [json.loads(line) for line in (toy_run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    for line in lines:
        assert {"loss", "lr", "wd", "invariance", "variance"} <= set(line)
        assert line["loss"] == pytest.approx(line["invariance"] + 2.0 * line["variance"], rel=1e-5)
        assert "ema" not in line and "target_std" not in line  # nothing of the JEPA family
    config = (toy_run / "config.yaml").read_text()
    assert "name: noisy_views" in config and "noise: 0.05" in config and "var_weight: 2.0" in config


def test_the_toy_run_resumes_and_is_evaluated_like_any_run(toy_run):
    result = openjepa("--import", TOY, "pretrain", str(toy_run / "config.yaml"), "run.max_steps=5")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming {toy_run} at step 4/" in result.stdout
    result = openjepa("--import", TOY, "eval", "knn", str(toy_run), "--k", "5", "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "openjepa encoder (step 5" in result.stdout  # its one role, "encoder", not said twice
    result = openjepa("--import", TOY, "info", str(toy_run), "--json")
    assert json.loads(result.stdout)["parameters"].keys() == {"encoder"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "method.nois=0.1",
            "unknown config key 'method.nois' of method 'noisy_views' (did you mean 'method.noise'?)",
        ),
        ("method.noise=loud", "config key 'method.noise' expects float, got 'loud'"),
        ("method.noise=-1", "method.noise must be at least 0, got -1.0"),
        ("method.predictor.depth=2", "unknown config key 'method.predictor' of method 'noisy_views'"),
    ],
)
def test_its_config_keys_are_validated(tmp_path, override, message):
    result = openjepa(
        "--import", TOY, "pretrain", "configs/demo.yaml", *BASE, override, f"run.out_dir={tmp_path}"
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_without_the_import_the_method_is_unknown(tmp_path):
    result = openjepa("pretrain", "configs/demo.yaml", *BASE, f"run.out_dir={tmp_path}")
    assert result.returncode == 2
    assert "unknown method 'noisy_views'" in result.stderr and "--import" in result.stderr
