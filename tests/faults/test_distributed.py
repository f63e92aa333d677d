"""Under ``torchrun``: a stopped (not dead) process makes the others fail after ``run.dist_timeout``, not
torch's 30 minutes; killing the launcher stops its workers (after saving) instead of leaving orphans."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from openjepa.utils.run_folder import read_checkpoint
from tests.faults.runner import LONG, child_env, wait_for_lines, write_empty
from tests.helpers import metrics


def start_torchrun(config: Path, run_dir: Path, *overrides: str) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "openjepa.cli", "pretrain", str(config), *LONG, f"run.out_dir={run_dir}", *overrides,
    ]  # fmt: skip
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        start_new_session=True,
    )


def workers(launcher: int) -> dict[int, int]:
    """rank → pid of the launcher's worker processes."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    ranks = {}
    for pid in map(int, children):
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = next(int(v.split(b"=")[1]) for v in env if v.startswith(b"RANK="))
        ranks[rank] = pid
    return ranks


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_gone(pids, timeout: float) -> float:
    t0 = time.monotonic()
    while any(alive(p) for p in pids):
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"processes {[p for p in pids if alive(p)]} still run after {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - t0


def test_a_stopped_rank_fails_the_others_after_the_timeout(tmp_path):
    run_dir = tmp_path / "run"
    launcher = start_torchrun(write_empty(tmp_path), run_dir, "run.dist_timeout=4")
    ranks: dict[int, int] = {}
    try:
        wait_for_lines(launcher, run_dir, 9)  # past the first checkpoint (step 7)
        ranks = workers(launcher.pid)
        os.kill(ranks[1], signal.SIGSTOP)
        waited = wait_gone([ranks[0]], timeout=60)
        assert waited < 30  # the timeout (4 s) plus a step, not torch's default 30 minutes
    finally:
        for pid in [launcher.pid, *ranks.values()]:  # the workers are in their own process groups
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        launcher.wait()
    stderr = launcher.stderr.read()
    assert "openjepa: error: rank 0: the processes lost each other" in stderr
    assert "run.dist_timeout=4" in stderr
    read_checkpoint(run_dir)  # the last checkpoint is intact


def test_killing_the_launcher_stops_its_workers_after_saving(tmp_path):
    run_dir = tmp_path / "run"
    launcher = start_torchrun(write_empty(tmp_path), run_dir)
    wait_for_lines(launcher, run_dir, 3)
    ranks = workers(launcher.pid)
    launcher.send_signal(signal.SIGKILL)  # the launcher only, as when its own job step is killed
    launcher.wait()
    try:
        wait_gone(ranks.values(), timeout=60)
    finally:
        for pid in ranks.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    state = read_checkpoint(run_dir)
    assert state["step"] == metrics(run_dir)[-1]["step"]  # saved where it stopped
    assert "torchrun launcher exited" in launcher.stderr.read()


def test_sigterm_to_the_launcher_saves_the_current_step(tmp_path):
    # what SLURM does at the time limit: torchrun passes SIGTERM on to its workers
    run_dir = tmp_path / "run"
    launcher = start_torchrun(write_empty(tmp_path), run_dir)
    wait_for_lines(launcher, run_dir, 3)
    ranks = workers(launcher.pid)
    launcher.send_signal(signal.SIGTERM)
    try:
        launcher.wait(timeout=60)
        wait_gone(ranks.values(), timeout=30)
    finally:
        for pid in [launcher.pid, *ranks.values()]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert read_checkpoint(run_dir)["step"] == metrics(run_dir)[-1]["step"]  # nothing trained was lost
    stderr = launcher.stderr.read()
    assert "stopped by SIGTERM" in stderr and "run the same command again to resume" in stderr
