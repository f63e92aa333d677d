"""Shared by the tests: a tiny but complete run's config overrides, a two-process ``torchrun`` launcher and a
pickle canary.

The tiny run: synthetic 16 px images, a 2-block ViT of width 32, a 4x4 patch grid, batch 16, CPU and fp32.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).parent
REPO = TESTS.parent


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


TINY = [
    "data.dataset=synthetic",
    "data.image_size=16",
    "model.patch_size=4",
    "model.depth=2",
    "model.embed_dim=32",
    "model.num_heads=2",
    "method.predictor.depth=1",
    "method.predictor.dim=16",
    "method.masks.min_keep=2",
    "optim.batch_size=16",
    "optim.epochs=1",
    "optim.warmup_epochs=0.01",
    "run.device=cpu",
    "run.precision=fp32",
    "run.progress=false",
    "run.log_every=1",
]


def tiny(tmp_path: Path, name: str, *extra: str) -> list[str]:
    """The tiny run's overrides writing into ``tmp_path / name``, then ``extra``."""
    return [*TINY, f"run.out_dir={tmp_path / name}", *extra]


def metrics(run: Path) -> list[dict]:
    """The lines of a run folder's ``metrics.jsonl``."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def write_empty(tmp_path: Path) -> Path:
    """A YAML config file that sets nothing (every key at its default)."""
    path = tmp_path / "empty.yaml"
    path.write_text("# all defaults\n")
    return path


def torchrun2(worker: str, *args: str, timeout: int = 300) -> None:
    """Run ``tests/workers/<worker>`` in two Gloo processes (one thread each); fail with its stderr if it
    fails."""
    script = str(TESTS / "workers" / worker)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, *args]
    path = os.pathsep.join([str(REPO / "src"), str(REPO)])  # this checkout's code, whatever is installed
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]


class Canary:
    """Unpickling an instance writes a marker file, so a test can tell whether unpickling ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __getstate__(self) -> dict:
        return {"marker": self.marker}

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).write_text("unpickled")
        self.marker = state["marker"]
