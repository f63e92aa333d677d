"""openjepa: self-supervised visual pretraining with I-JEPA and C-JEPA in plain PyTorch.

import openjepa
openjepa.pretrain("configs/demo.yaml")
encoder = openjepa.load_encoder("runs/demo")
"""

from openjepa.api import build_trainer, load_encoder, load_model, pretrain
from openjepa.config import Config, load_config

__version__ = "0.1.0"
__all__ = ["Config", "build_trainer", "load_config", "load_encoder", "load_model", "pretrain", "__version__"]
