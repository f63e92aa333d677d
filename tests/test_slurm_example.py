"""examples/slurm/pretrain.sbatch with stand-ins for srun and scontrol: SLURM's SIGTERM reaches the
training step, the script waits for the save and requeues the job; a finished run is not requeued."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "slurm" / "pretrain.sbatch"

# srun: logs its arguments; on SIGTERM logs it and exits with 143 after a "save"; else ends with FAKE_RC
SRUN = """#!/bin/bash
echo "srun $*" >> "$LOG"
trap 'echo "srun got TERM" >> "$LOG"; sleep 0.2; exit 143' TERM
for _ in $(seq 100); do sleep 0.05; done
exit "${FAKE_RC:-0}"
"""
SCONTROL = """#!/bin/bash
echo "scontrol $*" >> "$LOG"
if [ "$1" = show ]; then echo node-a; fi
"""


def start(tmp_path: Path, **env: str) -> tuple[subprocess.Popen, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "log.txt"
    log.write_text("")
    slurm = {"SLURM_SUBMIT_DIR": str(tmp_path), "SLURM_JOB_NODELIST": "node-a", "SLURM_NNODES": "2"}
    full = {**os.environ, **slurm, "SLURM_JOB_ID": "42", "LOG": str(log), **env}
    full["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return subprocess.Popen(["bash", str(SCRIPT)], env=full, stdout=subprocess.PIPE, text=True), log


def wait_for(log: Path, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)


@pytest.mark.parametrize("requeue", ["1", "0"])
def test_sigterm_saves_then_requeues(tmp_path, requeue):
    proc, log = start(tmp_path, REQUEUE=requeue)
    wait_for(log, "srun ")
    proc.send_signal(signal.SIGTERM)  # what --signal=B:TERM@300 sends the batch script
    proc.wait(timeout=20)
    text = log.read_text()
    assert "srun got TERM" in text
    assert "--max-restarts=0" in text and "--rdzv_endpoint=node-a:29500" in text and "--rdzv_id=42" in text
    assert ("scontrol requeue 42" in text) == (requeue == "1")
    assert proc.returncode == 143  # the training step's exit code


def test_a_run_that_ends_is_not_requeued(tmp_path):
    for rc in ("0", "1"):
        proc, log = start(tmp_path, FAKE_RC=rc)
        proc.wait(timeout=30)
        assert proc.returncode == int(rc)
        assert "requeue" not in log.read_text()
