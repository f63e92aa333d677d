"""SIGTERM (how SLURM ends a job) and Ctrl-C save ``latest.pt`` at the current step, exit with 128 + signal,
and the same command resumes to the uninterrupted run's numbers."""

import os
import signal

import pytest
import torch

from openjepa.utils.run_folder import read_checkpoint
from tests.faults.runner import logged_steps, run, start, wait_for_lines, write_empty
from tests.helpers import metrics


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_the_current_step_and_resumes_exactly(tmp_path, sig, code):
    config = write_empty(tmp_path)
    run_dir = tmp_path / "run"
    proc = start(config, run_dir)
    wait_for_lines(proc, run_dir, 5)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and signal.Signals(sig).name in lines[0] and "resume" in lines[0], stderr
    saved = read_checkpoint(run_dir)["step"]
    assert saved == logged_steps(run_dir) == metrics(run_dir)[-1]["step"]  # nothing trained is lost
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    assert not (run_dir / ".lock").exists()

    end = saved + 3
    resumed = run(config, run_dir, f"run.max_steps={end}")
    assert resumed.returncode == 0, resumed.stderr
    straight = run(config, tmp_path / "straight", f"run.max_steps={end}")
    assert straight.returncode == 0, straight.stderr
    losses = [(m["step"], m["loss"]) for m in metrics(run_dir)]
    assert losses == [(m["step"], m["loss"]) for m in metrics(tmp_path / "straight")]  # bit for bit


def _image_folder(root, n=64):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for i in range(n):
        pixels = torch.randint(0, 256, (20, 24, 3), generator=g, dtype=torch.uint8).numpy()
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_every_process_with_loader_workers_still_saves(tmp_path, sig):
    # SLURM signals every process of the job and Ctrl-C the whole foreground group: DataLoader workers too
    config = write_empty(tmp_path)
    run_dir = tmp_path / "run"
    data = _image_folder(tmp_path / "images")
    proc = start(config, run_dir, "data.dataset=folder", f"data.root={data}", "data.num_workers=2")
    wait_for_lines(proc, run_dir, 3)
    os.killpg(proc.pid, sig)  # the run and its workers
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert read_checkpoint(run_dir)["step"] == metrics(run_dir)[-1]["step"]
