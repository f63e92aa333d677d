"""openjepa: self-supervised visual pretraining with I-JEPA and C-JEPA in plain PyTorch."""

__version__ = "0.1.0"
