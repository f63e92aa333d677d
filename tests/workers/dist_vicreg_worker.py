"""Run under torchrun by the VICReg tests (2 processes, gloo): VICReg's variance and covariance on a
global batch split over the processes; saves each rank's values and local gradient."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from openjepa.losses.vicreg import gather_batch, vicreg_terms

if __name__ == "__main__":
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    z_global = torch.randn(16, 6, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.2, 2.0, 6)
    z_global[:, 1] += 0.5 * z_global[:, 0]  # correlated dimensions, so the covariance term is not zero
    if rank == 0:
        torch.save(z_global, out / "global.pt")
    local = z_global[rank * 8 : (rank + 1) * 8].clone().requires_grad_(True)
    var, cov = vicreg_terms([local])
    (25 * var + cov).backward()
    rows = gather_batch(local.detach()).shape[0]
    torch.save(
        {"var": var.detach(), "cov": cov.detach(), "grad": local.grad, "gathered_rows": rows},
        out / f"rank{rank}.pt",
    )
    if rank == 0:
        (out / "ok.json").write_text(json.dumps({"world": world}))
    dist.destroy_process_group()
