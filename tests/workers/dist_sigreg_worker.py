"""Run under torchrun by tests/losses/test_sigreg.py: each of two processes holds half of a batch; SIGReg must
equal the single-process statistic of the whole batch, and the gradients, once averaged over processes as
DDP does, those of the single process."""

import torch
import torch.distributed as dist

from openjepa.losses.sigreg import random_directions, sigreg, t_grid

if __name__ == "__main__":
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    z = torch.randn(64, 12, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.5, 2, 12) + 0.2
    a = random_directions(12, 16, torch.Generator().manual_seed(3))  # the same on every process
    grid = t_grid()

    whole = z.clone().requires_grad_(True)
    single = sigreg(whole, a, *grid, distributed=False)
    single.backward()

    rows = slice(rank * 32, (rank + 1) * 32)
    mine = z[rows].clone().requires_grad_(True)
    shared = sigreg(mine, a, *grid)
    shared.backward()
    torch.testing.assert_close(shared, single.detach(), rtol=1e-5, atol=1e-6)
    # each process's loss is the global statistic: DDP's averaging divides the summed gradients by world
    torch.testing.assert_close(mine.grad / world, whole.grad[rows], rtol=1e-4, atol=1e-7)
    dist.destroy_process_group()
