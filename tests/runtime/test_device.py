"""Device and precision names, and the autocast helper."""

import pytest
import torch

from openjepa.runtime import build_runtime
from openjepa.runtime.device import autocast, resolve_device, resolve_precision


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu7'"):
        resolve_device("tpu7")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA device is available; use cpu or auto"):
        resolve_device("cuda")


def test_precision_names():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    assert resolve_precision("auto", cpu) in (None, torch.bfloat16)
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", cpu)


def test_autocast_runs_matmuls_in_the_dtype_or_not_at_all():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast("cpu", torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
    with autocast("cpu", None):
        assert (a @ b).dtype == torch.float32


def test_single_process_runtime():
    runtime = build_runtime("cpu", "fp32")
    assert (runtime.device, runtime.amp_dtype) == (torch.device("cpu"), None)
    assert runtime.dist.world_size == 1 and runtime.dist.is_main and not runtime.dist.enabled
    with runtime.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
