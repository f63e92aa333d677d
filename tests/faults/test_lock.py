"""One writer per run folder: a second run is refused while the first lives; a dead run's lock is taken
over."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from openjepa.cli import main
from openjepa.utils.lock import LOCK_NAME, RunFolderBusyError, RunLock
from tests.faults.runner import child_env, logged_steps, run, start, wait_for_lines, write_empty
from tests.helpers import REPO, metrics, tiny

HOLD = (
    "import sys, time; from openjepa.utils.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
    "print('held', flush=True); time.sleep(600)"
)


def hold_lock(run_dir):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=REPO,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_and_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir)
    try:
        code = main(["pretrain", str(write_empty(tmp_path)), *tiny(tmp_path, "run", "run.max_steps=2")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert "in use by process" in err[0] and str(holder.pid) in err[0] and "run.out_dir" in err[0]
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]  # no config, metrics or checkpoint
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: the next run takes the lock over and trains
    assert main(["pretrain", str(write_empty(tmp_path)), *tiny(tmp_path, "run", "run.max_steps=2")]) == 0
    out = capsys.readouterr().out
    assert "took over the lock" in out and str(holder.pid) in out
    assert [m["step"] for m in metrics(run_dir)] == [1, 2]
    assert not (run_dir / LOCK_NAME).exists()  # released at the end


def test_two_concurrent_runs_one_refused_other_resumable(tmp_path):
    config = write_empty(tmp_path)
    run_dir = tmp_path / "run"
    first = start(config, run_dir)
    wait_for_lines(first, run_dir, 2)
    second = run(config, run_dir, "run.max_steps=5")
    assert second.returncode == 2 and "in use by process" in second.stderr, second.stderr
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 143, first.stderr.read()
    saved = logged_steps(run_dir)
    assert [m["step"] for m in metrics(run_dir)] == list(range(1, saved + 1))  # untouched by the refused run
    again = run(config, run_dir, f"run.max_steps={saved + 2}")  # and the folder resumes
    assert again.returncode == 0, again.stderr
    assert [m["step"] for m in metrics(run_dir)] == list(range(1, saved + 3))


def test_lock_is_exclusive_within_one_process_and_released(tmp_path):
    with RunLock(tmp_path / "r") as lock:
        record = json.loads((tmp_path / "r" / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and lock.held
        with pytest.raises(RunFolderBusyError, match="in use by process"):
            RunLock(tmp_path / "r").acquire()
    assert not (tmp_path / "r" / LOCK_NAME).exists()
    with RunLock(tmp_path / "r") as again:
        assert again.took_over is None  # a clean release leaves nothing stale


def test_out_dir_naming_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("precious")
    code = main(["pretrain", str(write_empty(tmp_path)), *tiny(tmp_path, "afile", "run.max_steps=1")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is a file" in err[0]
    assert (tmp_path / "afile").read_text() == "precious"


def test_killed_run_leaves_a_stale_lock_that_is_taken_over(tmp_path):
    config = write_empty(tmp_path)
    run_dir = tmp_path / "run"
    proc = start(config, run_dir)
    wait_for_lines(proc, run_dir, 10)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run_dir / LOCK_NAME).exists()
    time.sleep(0.1)
    again = run(config, run_dir, f"run.max_steps={logged_steps(run_dir) + 2}")
    assert again.returncode == 0, again.stderr
    assert "took over the lock" in again.stdout
