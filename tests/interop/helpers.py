"""A tiny I-JEPA run folder whose weights are all moved away from their initial values, for the export
tests (test_hf.py, test_safetensors.py)."""

from pathlib import Path

import torch

from openjepa.config import from_dict, to_dict
from openjepa.methods import build_method
from openjepa.utils.io import save_torch_file
from openjepa.utils.run_folder import CHECKPOINT_VERSION

IMAGE, PATCH, WIDTH, DEPTH, HEADS = 32, 8, 64, 2, 4


def write_tiny_run(run_dir: Path, stem: str = "linear") -> Path:
    """Write ``run_dir/checkpoints/latest.pt`` of a 2-block, 64-wide ViT on 32 px RGB images with the patch
    embedding ``stem``; returns ``run_dir``."""
    cfg = from_dict(
        {
            "method": {
                "name": "ijepa",
                "predictor": {"dim": 32, "depth": 1},
                "masks": {"allow_overlap": True},  # a 4x4 patch grid fits the default recipe only so
            },
            "model": {
                "name": "vit_tiny",
                "patch_size": PATCH,
                "embed_dim": WIDTH,
                "depth": DEPTH,
                "num_heads": HEADS,
                "stem": stem,
            },
            "data": {"dataset": "synthetic", "image_size": IMAGE, "channels": 3},
        }
    )
    torch.manual_seed(0)
    method = build_method(cfg, 3)
    with torch.no_grad():
        for p in method.parameters():  # LayerNorms away from (1, 0), biases away from 0
            p.add_(0.1 * torch.randn_like(p))
    state = {"version": CHECKPOINT_VERSION, "method": "ijepa", "step": 3, "epoch": 0.5}
    state |= {"model": method.state_dict(), "config": to_dict(cfg)}
    save_torch_file(state, run_dir / "checkpoints" / "latest.pt")
    return run_dir
