"""VICReg's batch gather in two torchrun processes against one process on the global batch."""

import json

import pytest
import torch

from openjepa.losses.vicreg import vicreg_terms
from tests.helpers import torchrun2

pytestmark = pytest.mark.slow


def test_gather_matches_one_process_on_the_global_batch(tmp_path):
    """Two gloo processes each hold half of a global batch; var/cov on the gathered embeddings equal the
    single-process values, and the local gradients, averaged over processes as DDP does, equal the
    single-process gradient of the local rows."""
    torchrun2("dist_vicreg_worker.py", str(tmp_path), timeout=120)

    z = torch.load(tmp_path / "global.pt", weights_only=True).requires_grad_(True)
    var, cov = vicreg_terms([z])
    (25 * var + cov).backward()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["var"].item() == pytest.approx(var.item(), rel=1e-6)
        assert got["cov"].item() == pytest.approx(cov.item(), rel=1e-6)
        rows = z.grad[rank * 8 : (rank + 1) * 8]
        torch.testing.assert_close(got["grad"] / 2, rows)  # DDP divides by the 2 processes
        assert got["gathered_rows"] == 16
    assert json.loads((tmp_path / "ok.json").read_text())["world"] == 2
