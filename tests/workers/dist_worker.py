"""Run under torchrun by the distributed training tests: pretrain, then save this rank's parameters."""

import sys
from pathlib import Path

import torch

from openjepa.api import build_trainer
from openjepa.config import load_config
from openjepa.runtime.distributed import cleanup_distributed

if __name__ == "__main__":
    out, overrides = Path(sys.argv[1]), sys.argv[2:]
    trainer = build_trainer(load_config(None, overrides))
    trainer.fit()
    torch.save(trainer.method.state_dict(), out / f"rank{trainer.runtime.dist.rank}.pt")
    cleanup_distributed()
