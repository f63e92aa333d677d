"""Two torchrun "nodes" on one machine (``--nnodes 2``, c10d rendezvous on 127.0.0.1, Gloo, one process
each): they train what one process trains on the same global batch; when one node dies the other fails
(after ``run.dist_timeout`` at most), and starting both again resumes from ``latest.pt``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from openjepa.config import load_config
from openjepa.train.trainer import Trainer
from openjepa.utils.run_folder import read_checkpoint
from tests.faults.runner import LONG, child_env, wait_for_lines, write_empty
from tests.helpers import TESTS, metrics, tiny

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(rank: int, port: int, target: list[str]) -> subprocess.Popen:
    """One node of a 2-node job: its own torchrun launcher with one process, meeting the other at the port."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
        f"--node_rank={rank}", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
        "--rdzv_id=openjepa-two-nodes", "--max_restarts=0", *target,
    ]  # fmt: skip
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        start_new_session=True,
    )


def finish(nodes: list[subprocess.Popen], timeout: float = 300) -> list[str]:
    """Wait for every node; their stderr."""
    out = []
    for node in nodes:
        try:
            _, err = node.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            _, err = node.communicate()
        out.append(err)
    return out


def test_two_nodes_match_one_process_on_the_same_global_batch(tmp_path):
    port = free_port()
    worker = [
        str(TESTS / "workers" / "dist_worker.py"),
        str(tmp_path),
        *tiny(tmp_path, "nodes", "run.max_steps=4"),
    ]
    nodes = [start_node(rank, port, worker) for rank in (0, 1)]
    errors = finish(nodes)
    assert [n.returncode for n in nodes] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    single = Trainer(load_config(None, tiny(tmp_path, "single", "run.max_steps=4", "optim.grad_accum=2")))
    single.fit()
    for key, value in single.method.state_dict().items():
        assert torch.equal(r0[key], r1[key]), key
        torch.testing.assert_close(r0[key], value, rtol=1e-4, atol=1e-5)
    assert [r["loss"] for r in metrics(tmp_path / "nodes")] == pytest.approx(
        [r["loss"] for r in metrics(tmp_path / "single")], rel=1e-4
    )
    assert read_checkpoint(tmp_path / "nodes")["world_size"] == 2


def test_a_dead_node_fails_the_job_and_a_restart_resumes_from_latest(tmp_path):
    run_dir, config = tmp_path / "run", write_empty(tmp_path)
    cli = [
        "-m",
        "openjepa.cli",
        "pretrain",
        str(config),
        *LONG,
        f"run.out_dir={run_dir}",
        "run.dist_timeout=4",
    ]
    port = free_port()
    nodes = [start_node(rank, port, cli) for rank in (0, 1)]
    try:
        wait_for_lines(nodes[0], run_dir, 9)  # past the first checkpoint (step 7)
        os.killpg(nodes[1].pid, signal.SIGKILL)  # node 1: its launcher and its worker, as a lost machine
        t0 = time.monotonic()
        nodes[0].wait(timeout=120)
        assert time.monotonic() - t0 < 60  # not torch's 30-minute default
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
        finish(nodes, timeout=30)
    assert nodes[0].returncode != 0
    saved = read_checkpoint(run_dir)["step"]
    assert saved >= 7

    stop = saved + 5
    port = free_port()
    nodes = [start_node(rank, port, [*cli, f"run.max_steps={stop}"]) for rank in (0, 1)]
    errors = finish(nodes)
    assert [n.returncode for n in nodes] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    state = read_checkpoint(run_dir)
    assert state["step"] == stop and state["world_size"] == 2
    steps = [r["step"] for r in metrics(run_dir) if "loss" in r]
    assert steps[-5:] == list(range(saved + 1, stop + 1))  # resumed right after the saved step
