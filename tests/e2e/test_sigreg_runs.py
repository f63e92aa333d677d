"""SIGReg as a JEPA regulariser under torchrun: two processes follow one on the same global batch (SIGReg
sees every process's rows)."""

import pytest
import torch

from openjepa.config import load_config
from openjepa.train.trainer import Trainer
from tests.helpers import TINY, metrics, torchrun2

pytestmark = pytest.mark.slow


# (C-JEPA's reading C draws its photometric views per process, so only readings A and B can match)
@pytest.mark.parametrize(
    "extra", [("method.sigreg=0.5",), ("method=cjepa", "method.reading=B", "method.regulariser=sigreg")]
)
def test_torchrun_two_processes_match_one_process(tmp_path, extra):
    def args(name):  # masks cut over the whole batch, as the single process cuts them
        return [*TINY, f"run.out_dir={tmp_path / name}", *extra, "method.masks.trim=batch", "run.max_steps=3"]

    torchrun2("dist_worker.py", str(tmp_path), *args("ddp"))
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    single = Trainer(load_config(None, args("single")))
    single.fit()
    for key, value in single.method.state_dict().items():
        torch.testing.assert_close(r0[key], value, rtol=1e-4, atol=1e-5, msg=key)
    ddp, one = metrics(tmp_path / "ddp"), metrics(tmp_path / "single")
    for key in ("loss", "sigreg"):
        assert [r[key] for r in ddp] == pytest.approx([r[key] for r in one], rel=1e-4), key
