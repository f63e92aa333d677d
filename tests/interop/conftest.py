"""Fixtures shared by the interop tests: a tiny trained run folder and two images for it."""

from pathlib import Path

import pytest
import torch

from tests.interop.helpers import IMAGE, write_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """An openjepa run folder of a tiny model whose weights are all moved away from their initial values."""
    return write_tiny_run(tmp_path_factory.mktemp("run"))


@pytest.fixture
def images():
    return torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))
