"""to_device: the step's small host tensors reach the device without the host waiting on CUDA."""

from __future__ import annotations

import pytest
import torch

from openjepa.utils.device_copy import to_device


def test_on_the_cpu_it_is_a_plain_move() -> None:
    x = torch.arange(6).view(2, 3)
    assert to_device(x, torch.device("cpu")) is x  # nothing copied, nothing pinned


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_copy_is_queued_from_pinned_memory() -> None:
    x = torch.arange(1 << 20)
    y = to_device(x, torch.device("cuda"))
    assert y.device.type == "cuda" and torch.equal(y.cpu(), x)
    assert not x.is_pinned()  # the caller's tensor is left as it was
