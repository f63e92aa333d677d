"""Run by tests/test_train.py under torchrun: pretrain, then save this rank's parameters for comparison."""

import sys
from pathlib import Path

import torch

from openjepa.config import load_config
from openjepa.train.distributed import cleanup_distributed
from openjepa.train.loop import Trainer

if __name__ == "__main__":
    out, overrides = Path(sys.argv[1]), sys.argv[2:]
    trainer = Trainer(load_config(None, overrides))
    trainer.fit()
    torch.save(trainer.model.state_dict(), out / f"rank{trainer.dist.rank}.pt")
    cleanup_distributed()
