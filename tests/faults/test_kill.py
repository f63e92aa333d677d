"""SIGKILL at random points, many aimed at checkpoint writes: no checkpoint is ever corrupt, and the run,
killed and resumed again and again, ends with the uninterrupted run's numbers, bit for bit."""

import os
import random
import signal
import time

import pytest

from openjepa.utils.run_folder import read_checkpoint
from tests.faults.runner import logged_steps, run, start, wait_for_lines, write_empty
from tests.helpers import metrics

END = 120  # the step every trial's run folder is finally taken to


def kill_trials(tmp_path, trials: int, seed: int, *overrides: str, end: int = END) -> dict[str, int]:
    """Kill a run ``trials`` times (every other kill while a checkpoint is being written), check the
    checkpoint after each kill, then finish the run and compare it with an uninterrupted one."""
    rng = random.Random(seed)
    config = write_empty(tmp_path)
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    counts = {"kills": 0, "during_write": 0, "checkpoints_checked": 0}
    for trial in range(trials):
        proc = start(
            config, run_dir, f"run.max_steps={end}", "run.checkpoint_every=2", "run.keep_every=10", *overrides
        )
        wait_for_lines(proc, run_dir, min(logged_steps(run_dir) + 1, end - 1))
        deadline = time.monotonic() + rng.uniform(0.05, 1.5)
        aimed = trial % 2 == 0
        while time.monotonic() < deadline and proc.poll() is None:
            if aimed and any(checkpoints.glob(".tmp-*")):  # a checkpoint is being written
                counts["during_write"] += 1
                break
            time.sleep(0.001)
        if proc.poll() is not None:  # it finished before the kill: nothing to test in this trial
            break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        counts["kills"] += 1
        for path in checkpoints.glob("*.pt"):  # every checkpoint on disk loads and passes its checksums
            state = read_checkpoint(path)
            assert state["step"] > 0
            counts["checkpoints_checked"] += 1
    finished = run(
        config, run_dir, f"run.max_steps={end}", "run.checkpoint_every=2", "run.keep_every=10", *overrides
    )
    assert finished.returncode == 0, finished.stderr
    straight = run(config, tmp_path / "straight", f"run.max_steps={end}", *overrides)
    assert straight.returncode == 0, straight.stderr
    got = [(m["step"], m["loss"]) for m in metrics(run_dir)]
    assert got == [(m["step"], m["loss"]) for m in metrics(tmp_path / "straight")]  # bit for bit
    assert not list(checkpoints.glob(".tmp-*"))  # leftovers of killed writes were swept
    return counts


def test_sigkill_trials(tmp_path):
    counts = kill_trials(tmp_path, trials=4, seed=0)
    assert counts["kills"] >= 3 and counts["checkpoints_checked"] >= 3


@pytest.mark.long
def test_sigkill_trials_long(tmp_path):
    # a wider model: its checkpoints (about 40 MB) take long enough to write that kills land inside writes
    wide = ("model.embed_dim=192", "model.num_heads=3", "model.depth=4", "method.predictor.heads=2")
    counts = kill_trials(tmp_path, 40, 1, *wide, end=1000)
    print(counts)
    assert counts["kills"] >= 30 and counts["during_write"] >= 5
