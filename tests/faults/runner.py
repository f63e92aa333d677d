"""Runs ``openjepa pretrain`` of the tiny config in a child process, for the fault-injection tests."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import REPO, TINY

#: a tiny run long enough to be interrupted (about 10 ms per step)
LONG = [*TINY, "optim.epochs=400", "run.checkpoint_every=7"]


def write_empty(folder: Path) -> Path:
    path = folder / "empty.yaml"
    path.write_text("# all defaults\n")
    return path


def pretrain_cmd(config: Path, run: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "openjepa.cli",
        "pretrain",
        str(config),
        *LONG,
        f"run.out_dir={run}",
        *overrides,
    ]


def child_env() -> dict[str, str]:
    path = os.pathsep.join([str(REPO / "src"), str(REPO)])  # this checkout's code, whatever is installed
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def start(config: Path, run: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        pretrain_cmd(config, run, *overrides),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        start_new_session=True,  # a signal to the test's group does not reach it
    )


def run(config: Path, run_dir: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        pretrain_cmd(config, run_dir, *overrides),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout,
    )


def logged_steps(run_dir: Path) -> int:
    """Number of complete lines in the run's metrics.jsonl (0 when absent)."""
    try:
        return (run_dir / "metrics.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for_lines(proc: subprocess.Popen, run_dir: Path, lines: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while logged_steps(run_dir) < lines:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.send_signal(signal.SIGKILL)
            raise AssertionError("the run did not log in time")
        time.sleep(0.05)
