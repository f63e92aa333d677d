"""Config overrides of a tiny but complete run, shared by the tests that pretrain for a few steps, and a
two-process ``torchrun`` launcher for the distributed tests.

Synthetic 16 px images, a 2-block ViT of width 32, a 4x4 patch grid, batch 16, CPU and fp32.
"""

import os
import subprocess
import sys
from pathlib import Path

TINY = [
    "data.dataset=synthetic",
    "data.image_size=16",
    "model.patch_size=4",
    "model.depth=2",
    "model.embed_dim=32",
    "model.num_heads=2",
    "model.pred_depth=1",
    "model.pred_dim=16",
    "masks.min_keep=2",
    "optim.batch_size=16",
    "optim.epochs=1",
    "optim.warmup_epochs=0.01",
    "run.device=cpu",
    "run.precision=fp32",
    "run.progress=false",
    "run.log_every=1",
]


def torchrun2(worker: str, *args: str, timeout: int = 300) -> None:
    """Run ``tests/<worker>`` in two Gloo processes (one thread each); fail with its stderr if it fails."""
    script = str(Path(__file__).with_name(worker))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
